"""Export to TensorFlow Lite: the rounding rules that make minicompress's integers TFLite's integers (formulas on
concrete numbers, no optional package needed), then round trips through LiteRT (skipped without the export extra)."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minicompress as mc
from minicompress import data, models, nn
from minicompress import quantization as Q
from minicompress import export

# --------------------------------------------------------------------------------------------------------------------
# the rules TFLite's kernels follow, pinned on numbers
# --------------------------------------------------------------------------------------------------------------------


def test_double_rounding_example_differs_from_exact_rounding():
    M0, n = Q.quantize_multiplier(0.375)
    assert (int(M0), int(n)) == (3 * 2**29, 1)
    acc = np.array([1, -1, 2, 5], dtype=np.int32)
    # high = round(0.75 * acc) = 1, -1, 2 (1.5), 4 (3.75); then round_away(high / 2) = 1, -1, 1, 2
    np.testing.assert_array_equal(Q.multiply_by_quantized_multiplier(acc, M0, n), [1, -1, 1, 2])
    np.testing.assert_array_equal(Q.requantize(acc, M0, n, 0, -128, 127), [0, 0, 1, 2])  # one rounding, ties up
    np.testing.assert_array_equal(Q.requantize(acc, M0, n, 3, 0, 255, rounding="double"), [4, 2, 4, 5])
    with pytest.raises(ValueError, match="rounding='nearest'"):
        Q.requantize(acc, M0, n, 0, -128, 127, rounding="nearest")


def _round_up(f):
    return (f + Fraction(1, 2)).__floor__()


def _round_away(f):
    return _round_up(f) if f >= 0 else -_round_up(-f)


@settings(max_examples=50, deadline=None)
@given(acc=st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=1, max_size=10), M=st.floats(1e-6, 0.99))
def test_multiply_by_quantized_multiplier_is_two_roundings(acc, M):
    M0, n = Q.quantize_multiplier(M)
    got = Q.multiply_by_quantized_multiplier(np.array(acc, np.int32), M0, n)
    for a, g in zip(acc, got.tolist()):
        high = _round_up(Fraction(a * int(M0), 2**31))  # gemmlowp's high multiply: ties up
        assert g == _round_away(Fraction(high, 2 ** int(n)))  # its rounding shift: ties away from zero


def test_high_multiply_rounds_ties_up_and_the_shift_away_from_zero():
    M0, n = Q.quantize_multiplier(0.5)  # M0 = 2^30, n = 0: only the high multiply rounds
    np.testing.assert_array_equal(Q.multiply_by_quantized_multiplier(np.array([1, -1, -3], np.int32), M0, n),
                                  [1, 0, -1])  # 0.5 -> 1, -0.5 -> 0, -1.5 -> -1
    M0, n = Q.quantize_multiplier(0.25)  # M0 = 2^30, n = 1: the high multiply is exact here, the shift rounds
    np.testing.assert_array_equal(Q.multiply_by_quantized_multiplier(np.array([2, -2, -6], np.int32), M0, n),
                                  [1, -1, -2])  # high 1, -1, -3; then 0.5 -> 1, -0.5 -> -1, -1.5 -> -2


def test_quantize_multiplier_rounds_ties_up_as_tflite():
    M = (2**30 + 0.5) / 2**31  # mantissa * 2^31 = 2^30 + 1/2 exactly: std::round gives 2^30 + 1, half-even 2^30
    M0, n = Q.quantize_multiplier(M)
    assert (int(M0), int(n)) == (2**30 + 1, 0)


def test_quantize_entrance_rounds_float_division_half_away():
    quant = Q.Quantize(0.5, 3, 0, 255)
    # x / S = 2.5, -2.5, 0.5, 1.0 -> 3, -3, 1, 1 (half away from zero, TFLite's QUANTIZE; half-even: 2, -2, 0, 1)
    np.testing.assert_array_equal(quant(np.array([1.25, -1.25, 0.25, 0.5], np.float32)).q, [6, 0, 4, 4])
    assert quant(np.array([1e30, -1e30], np.float32)).q.tolist() == [255, 0]


def test_avg_pool_ties_go_away_from_int8_zero():
    pool = Q.QuantizedAvgPool2d(2)
    q = np.array([[127, 128], [127, 128]], np.uint8)[None, None]  # int8 -1, 0: mean -0.5 -> -1 -> code 127
    assert pool(Q.QTensor(q, 0.1, 128, 0, 255)).q.item() == 127
    q = np.array([[128, 129], [128, 129]], np.uint8)[None, None]  # int8 0, 1: mean 0.5 -> 1 -> code 129
    assert pool(Q.QTensor(q, 0.1, 128, 0, 255)).q.item() == 129
    q = np.array([[-1, 0], [-1, 0]], np.int8)[None, None]  # signed codes: ties away from 0 directly
    assert pool(Q.QTensor(q, 0.1, 0, -128, 127)).q.item() == -1


# --------------------------------------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------------------------------------


def _digits(n=300, root=None):
    x, _ = data.load_mnist(root, "test")
    loader = data.DataLoader(x[:n], np.zeros(min(n, len(x)), np.int64), 500, normalize="standard")
    return loader.transform(x[:n]).reshape(-1, 1, 28, 28)


def _avg_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 8, 3, stride=2),
                         nn.ReLU(), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


def _pad_net():
    # stride 2, padding 1 on 28 pixels is not TFLite's SAME (which pads 0 before, 1 after): an explicit PAD; the
    # Flatten at the end has no Linear to absorb the NHWC order: a TRANSPOSE back to NCHW
    return nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())


def _relu_after_pool_net():
    # a ReLU that no Conv2d / Linear absorbs: TFLite's int8 RELU operator
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 13 * 13, 10))


NETS = {"lenet5": models.lenet5, "lenet5_caffe": models.lenet5_caffe, "lenet300_100": models.lenet300_100,
        "avg_net": _avg_net, "pad_net": _pad_net, "relu_after_pool": _relu_after_pool_net}


def _codes(qmodel, x):
    """minicompress's int8 codes of the last integer layer (TFLite's int8 = uint8 - 128)."""
    h = x
    for m in list(qmodel)[:-1]:
        h = m(h)
    return h.q.astype(np.int32) - 128


@pytest.fixture(scope="module")
def litert():
    pytest.importorskip("flatbuffers", reason="export extra not installed (pip install -e '.[export]')")
    pytest.importorskip("tflite", reason="export extra not installed (pip install -e '.[export]')")
    return pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) not installed")


# --------------------------------------------------------------------------------------------------------------------
# round trips through LiteRT
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NETS))
def test_float_export_runs_in_litert_within_float_tolerance(litert, name):
    mc.manual_seed(0)
    model, x = NETS[name]().eval(), _digits(64)
    out = export.run_tflite(export.to_tflite(model), x)
    np.testing.assert_allclose(out, model(x).data, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,per_channel", [(n, True) for n in sorted(NETS)] + [("lenet5", False)])
def test_int8_export_is_bit_exact_in_litert_reference_kernels(litert, name, per_channel):
    mc.manual_seed(0)
    model, x = NETS[name]().eval(), _digits(300)
    qmodel = Q.quantize_static(model, [x[:128]], per_channel=per_channel)
    out, codes = export.run_tflite(export.to_tflite(qmodel), x, return_codes=True)
    np.testing.assert_array_equal(codes.astype(np.int32), _codes(qmodel, x))
    np.testing.assert_array_equal(out, qmodel(x).data)  # S (q - Z) of the same integers


def test_int8_optimized_kernels_within_two_steps(litert):
    # LiteRT's optimized kernels (ruy/gemmlowp paths) round differently from its reference kernels
    mc.manual_seed(0)
    x = _digits(300)
    qmodel = Q.quantize_static(models.lenet5_caffe().eval(), [x[:128]])
    _, codes = export.run_tflite(export.to_tflite(qmodel), x, reference=False, return_codes=True)
    assert np.abs(codes.astype(np.int32) - _codes(qmodel, x)).max() <= 2


def test_int8_lenet5_bit_exact_on_full_mnist_test_set(litert, mnist_dir):
    mc.manual_seed(0)
    x = _digits(10_000, mnist_dir)
    qmodel = Q.quantize_static(models.lenet5().eval(), [x[:256]])
    _, codes = export.run_tflite(export.to_tflite(qmodel), x, return_codes=True)
    assert (codes.astype(np.int32) == _codes(qmodel, x)).all(axis=1).sum() == len(x)


def test_tflite_file_structure(litert, tmp_path):
    mc.manual_seed(0)
    x = _digits(16)
    qmodel = Q.quantize_static(models.lenet5().eval(), [x])
    size = export.save_tflite(qmodel, tmp_path / "m.tflite")
    assert size == (tmp_path / "m.tflite").stat().st_size
    interp = export.tflite.interpreter(tmp_path / "m.tflite")
    details = {t["name"]: t for t in interp.get_tensor_details()}
    w = details["1.conv/weight"]
    assert w["dtype"] == np.int8 and w["shape"].tolist() == [6, 5, 5, 1]  # OHWI
    assert w["quantization_parameters"]["zero_points"].tolist() == [0] * 6
    np.testing.assert_array_equal(w["quantization_parameters"]["scales"], qmodel[1].weight_scale)
    b = details["1.conv/bias"]
    assert b["dtype"] == np.int32
    np.testing.assert_allclose(b["quantization_parameters"]["scales"],
                               np.float32(qmodel[1].input_scale) * qmodel[1].weight_scale, rtol=1e-7)
    act = details["1.conv"]
    assert act["dtype"] == np.int8
    assert act["quantization_parameters"]["zero_points"].tolist() == [int(qmodel[1].output_zero_point) - 128]


# --------------------------------------------------------------------------------------------------------------------
# what cannot be exported
# --------------------------------------------------------------------------------------------------------------------


def test_unsupported_layers_and_schemes_are_named(litert):
    with pytest.raises(export.UnsupportedModelError, match=r"layer 1 \(Tanh\) cannot be exported"):
        export.to_tflite(nn.Sequential(nn.Flatten(), nn.Tanh(), nn.Linear(784, 10)))
    with pytest.raises(export.UnsupportedModelError, match="nn.Sequential"):
        export.to_tflite(nn.Linear(3, 2))
    x = _digits(16)
    q4 = Q.quantize_static(models.lenet300_100().eval(), [x], bits=4)
    with pytest.raises(export.UnsupportedModelError, match=r"activations in \[0, 15\].*8-bit"):
        export.to_tflite(q4)
    with pytest.raises(ValueError, match="input_shape"):
        export.to_tflite(models.lenet5(), input_shape=(0, 28, 28))


def test_missing_extra_names_the_package_and_the_install_line(monkeypatch):
    with pytest.raises(export.MissingExtraError, match=r"'no_such_package_xyz'.*pip install -e \"\.\[export\]\""):
        export.require("no_such_package_xyz", "to_tflite")


# --------------------------------------------------------------------------------------------------------------------
# ONNX and ONNX Runtime
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx", reason="export extra not installed (pip install -e '.[export]')")
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e '.[export]')")


@pytest.mark.parametrize("name", sorted(NETS))
def test_float_onnx_runs_in_onnxruntime_within_float_tolerance(ort, name):
    mc.manual_seed(0)
    model, x = NETS[name]().eval(), _digits(64)
    np.testing.assert_allclose(export.run_onnx(export.to_onnx(model), x), model(x).data, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["lenet5", "avg_net"])
def test_int8_onnx_each_layer_within_one_step(ort, name):
    """ONNX Runtime requantizes with a float multiplier and rounds half to even: each layer, given minicompress's
    own input codes, gives codes at most one step from minicompress's (which are TFLite's)."""
    mc.manual_seed(0)
    x = _digits(200)
    qmodel = Q.quantize_static(NETS[name]().eval(), [x[:128]])
    h, steps = qmodel[0](x), 0
    for layer in list(qmodel)[1:-1]:
        out = layer(h)
        if not isinstance(layer, (Q.QuantizedConv2d, Q.QuantizedLinear, Q.QuantizedAvgPool2d)):
            h = out
            continue
        single = nn.Sequential(Q.Quantize(h.scale, h.zero_point, 0, 255), layer, Q.DeQuantize())
        real = h.dequantize().astype(np.float32)  # S (q - Z): QuantizeLinear gets q back exactly
        np.testing.assert_array_equal(single[0](real).q, h.q)
        _, codes = export.run_onnx(export.to_onnx(single, input_shape=h.q.shape[1:]), real, return_codes=True)
        diff = np.abs(codes.astype(np.int32) - out.q.astype(np.int32))
        assert diff.max() <= 1, type(layer).__name__
        h, steps = out, steps + int((diff > 0).sum())
    assert steps > 0  # the bound is reached: the two requantizations really differ


def test_int8_onnx_end_to_end_agrees_with_minicompress(ort):
    mc.manual_seed(0)
    x = _digits(300)
    qmodel = Q.quantize_static(models.lenet5().eval(), [x[:128]])
    out, codes = export.run_onnx(export.to_onnx(qmodel), x, return_codes=True)
    mine = _codes(qmodel, x) + 128
    assert np.abs(codes.astype(np.int32) - mine).max() <= 2  # one step per layer can add up
    assert (out.argmax(1) == qmodel(x).data.argmax(1)).mean() >= 0.99


# --------------------------------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter (dynamo=False): works offline
def test_import_onnx_from_torch_lenet5(ort, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10),
    ).eval()  # fmt: skip
    path = tmp_path / "lenet.onnx"
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}})
    model = export.from_onnx(path)
    assert model.spec == "lenet5"
    x = _digits(32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x).data, want, rtol=1e-4, atol=1e-5)


def test_import_onnx_of_our_own_export_round_trips(ort):
    mc.manual_seed(0)
    for spec in ("lenet5_caffe", "mlp:784-30-10"):
        model = models.from_spec(spec).eval()
        back = export.from_onnx(export.to_onnx(model).SerializeToString())
        assert back.spec == spec
        x = _digits(8)
        np.testing.assert_allclose(back(x).data, model(x).data, rtol=1e-5, atol=1e-6)


def test_import_onnx_refuses_unsupported_operators_by_name(ort):
    from onnx import TensorProto, helper

    def graph(*nodes):
        g = helper.make_graph(list(nodes), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, [1, 4])])
        return helper.make_model(g)

    with pytest.raises(export.UnsupportedModelError, match=r"node 1 'sig' \(op Sigmoid\) is not supported"):
        export.from_onnx(graph(helper.make_node("Relu", ["x"], ["r"], name="r"),
                               helper.make_node("Sigmoid", ["r"], ["y"], name="sig")))
    with pytest.raises(export.UnsupportedModelError, match="only a chain"):
        export.from_onnx(graph(helper.make_node("Relu", ["x"], ["r"], name="r"),
                               helper.make_node("Relu", ["x"], ["y"], name="r2")))
    with pytest.raises(export.UnsupportedModelError, match="ceil_mode=1"):
        export.from_onnx(graph(helper.make_node("MaxPool", ["x"], ["y"], name="p", kernel_shape=[2, 2],
                                                ceil_mode=1)))


def test_import_safetensors_with_a_spec(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy", reason="export extra not installed")
    mc.manual_seed(0)
    model = models.lenet5().eval()
    state = {k: np.asarray(v) for k, v in model.state_dict().items()}
    st_numpy.save_file(state, str(tmp_path / "w.safetensors"))
    back = export.from_safetensors(tmp_path / "w.safetensors", "lenet5")
    x = _digits(8)
    np.testing.assert_array_equal(back(x).data, model(x).data)
    st_numpy.save_file({**state, "0.weight": state["0.weight"].astype(np.float16)}, str(tmp_path / "h.safetensors"))
    assert export.from_safetensors(tmp_path / "h.safetensors", "lenet5")[0].weight.data.dtype == np.float32
    with pytest.raises(export.UnsupportedModelError, match=r"missing \['0.bias'\]"):
        st_numpy.save_file({k: v for k, v in state.items() if k != "0.bias"}, str(tmp_path / "m.safetensors"))
        export.from_safetensors(tmp_path / "m.safetensors", "lenet5")
    with pytest.raises(export.UnsupportedModelError, match=r"'0.weight' has shape \(6, 1, 3, 3\)"):
        st_numpy.save_file({**state, "0.weight": np.zeros((6, 1, 3, 3), np.float32)}, str(tmp_path / "s.safetensors"))
        export.from_safetensors(tmp_path / "s.safetensors", "lenet5")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(export.UnsupportedModelError, match="not a readable safetensors file"):
        export.from_safetensors(tmp_path / "bad.safetensors", "lenet5")
