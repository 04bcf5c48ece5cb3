"""`minicompress export` and `minicompress import`: files written atomically, outputs checked in the runtimes,
existing outputs refused without --force, and one-line errors."""
import numpy as np
import pytest

import minicompress as mc
from minicompress import checkpoint, cli, models
from minicompress import quantization as Q

pytest.importorskip("tflite", reason="export extra not installed (pip install -e '.[export]')")
pytest.importorskip("ai_edge_litert", reason="export extra not installed (pip install -e '.[export]')")
pytest.importorskip("onnxruntime", reason="export extra not installed (pip install -e '.[export]')")


@pytest.fixture()
def saved(tmp_path):
    mc.manual_seed(0)
    model = models.lenet5()
    checkpoint.save(model, tmp_path / "m.npz")
    x = np.random.default_rng(0).normal(size=(64, 1, 28, 28)).astype(np.float32)
    Q.save_quantized(Q.quantize_static(model.eval(), [x]), tmp_path / "q.npz")
    Q.save_quantized(Q.quantize_dynamic(model), tmp_path / "d.npz")
    return tmp_path


def _error(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_export_int8_tflite_is_checked_bit_exact_in_litert(saved, capsys):
    out = saved / "q.tflite"
    assert cli.main(["export", str(saved / "q.npz"), "--format", "tflite", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"int8 tflite, {out.stat().st_size:,} bytes" in text
    assert "200/200 with the very same output integers" in text
    assert not list(saved.glob("*.tmp"))


def test_export_float_onnx_and_import_it_back(saved, capsys):
    onnx_path, back = saved / "m.onnx", saved / "back.npz"
    assert cli.main(["export", str(saved / "m.npz"), "--out", str(onnx_path)]) == 0  # format from the suffix
    assert "float32 onnx" in capsys.readouterr().out
    assert cli.main(["import", str(onnx_path), "--out", str(back)]) == 0
    assert "lenet5, 61,706 parameters" in capsys.readouterr().out
    x = np.zeros((2, 1, 28, 28), np.float32) + 0.5
    np.testing.assert_allclose(checkpoint.load(back)(x).data, checkpoint.load(saved / "m.npz")(x).data, rtol=1e-6)


def test_import_safetensors_needs_a_spec(saved, capsys):
    st_numpy = pytest.importorskip("safetensors.numpy")
    path = saved / "w.safetensors"
    st_numpy.save_file({k: np.asarray(v) for k, v in checkpoint.load(saved / "m.npz").state_dict().items()},
                       str(path))
    assert "pass --spec" in _error(capsys, ["import", str(path), "--out", str(saved / "w.npz")])
    assert cli.main(["import", str(path), "--spec", "lenet5", "--out", str(saved / "w.npz")]) == 0
    assert "does not hold the weights of 'lenet300_100'" in _error(
        capsys, ["import", str(path), "--spec", "lenet300_100", "--out", str(saved / "w2.npz")])


def test_existing_outputs_and_bad_inputs_are_refused_before_any_work(saved, capsys):
    out = saved / "q.tflite"
    out.write_bytes(b"keep me")
    assert "exists already; pass --force" in _error(capsys, ["export", str(saved / "q.npz"), "--out", str(out)])
    assert out.read_bytes() == b"keep me"
    assert cli.main(["export", str(saved / "q.npz"), "--out", str(out), "--force", "--no-check"]) == 0
    assert out.read_bytes()[4:8] == b"TFL3"
    assert "is the input" in _error(capsys, ["export", str(saved / "q.npz"), "--format", "onnx", "--out",
                                                  str(saved / "q.npz"), "--force"])
    assert "cannot tell the format" in _error(capsys, ["export", str(saved / "m.npz"), "--out", str(saved / "x")])
    assert "dynamically quantized" in _error(capsys, ["export", str(saved / "d.npz"), "--out", str(saved / "d.onnx")])
    assert "expected a .onnx or .safetensors" in _error(capsys, ["import", str(saved / "m.npz"), "--out",
                                                                 str(saved / "z.npz")])
    assert "no such file" in _error(capsys, ["import", str(saved / "none.onnx"), "--out", str(saved / "z.npz")])


def test_import_never_writes_over_its_input_or_an_existing_file(saved, capsys):
    onnx_file = saved / "m.onnx"
    assert cli.main(["export", str(saved / "m.npz"), "--out", str(onnx_file), "--no-check"]) == 0
    capsys.readouterr()
    before = onnx_file.read_bytes()
    assert "is the input" in _error(capsys, ["import", str(onnx_file), "--out", str(onnx_file), "--force"])
    assert onnx_file.read_bytes() == before
    existing = saved / "kept.npz"
    existing.write_bytes(b"keep me")
    assert "exists already; pass --force" in _error(capsys, ["import", str(onnx_file), "--out", str(existing)])
    assert existing.read_bytes() == b"keep me"
    assert cli.main(["import", str(onnx_file), "--out", str(existing), "--force"]) == 0
    assert checkpoint.load(existing).spec == "lenet5"
    assert not list(saved.glob("*.tmp"))


def test_demo_rows_give_tflite_file_sizes_and_identical_integers(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--only", "export", "--no-progress", "--out", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    assert "float32 .tflite in LiteRT" in text and "int8 .tflite in LiteRT" in text
    assert "500/500 test outputs bit-identical" in text and "int8 .onnx:" in text


def test_missing_extra_is_one_line_naming_the_install(saved, capsys, monkeypatch):
    from minicompress import export

    def missing(module, fn):
        raise export.MissingExtraError(f"{fn}: needs the optional package {module!r}; install the export extra: "
                                       f"{export.EXTRA}")

    monkeypatch.setattr(export.tflite, "require", missing)
    err = _error(capsys, ["export", str(saved / "q.npz"), "--out", str(saved / "z.tflite")])
    assert "'flatbuffers'" in err and 'pip install -e ".[export]"' in err
    assert not (saved / "z.tflite").exists()
