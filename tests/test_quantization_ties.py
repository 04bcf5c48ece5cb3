"""Quantization at exact ties, against PyTorch 2.13 on the CPU (issue 13, "parity at ties").

minicompress rounds x * (1 / S) (float32) half to even and adds Z after rounding. The tests below pin what each
PyTorch quantizer does with the same inputs, on values built to land on or next to a half-integer:
- torch.fake_quantize_per_tensor_affine / per_channel_affine: the same formula, bit for bit;
- torch.quantize_per_tensor to quint8 / qint8: round(fma(x, 1 / S, Z)), the product not rounded to float32;
- torch.quantize_per_tensor to qint32 and torch.quantize_per_channel: round(float32(x * (1 / S)) + Z).
Both of the last two differ from minicompress only at those ties (documented in quantization.quantize).
"""
import warnings

import numpy as np
import pytest

from minicompress import quantization as Q

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's deprecation note on quantized tensors

DTYPES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1)}


def near_ties(rng, n, scale, zero_point, lo, hi):
    """float32 x with x / S on or within two float32 steps of k + 0.5, for k + Z in [lo, hi)."""
    k = rng.integers(lo - zero_point, hi - zero_point, n)
    x = ((k + 0.5) * np.float64(np.float32(scale))).astype(np.float32)
    for _ in range(2):
        step = rng.integers(-1, 2, n)
        x = np.where(step > 0, np.nextafter(x, np.float32(np.inf)), np.where(step < 0, np.nextafter(x, -np.inf), x))
    return x.astype(np.float32)


def fused_legacy(x, scale, zero_point):
    """round(x * (1 / S) + Z) with one rounding for the product and the sum (the float64 sum of a float32 product
    and a small integer is exact), as fbgemm's AVX2 quantizer for 8-bit per-tensor codes."""
    inv = np.float64(np.float32(1) / np.float32(scale))
    return np.rint((x.astype(np.float64) * inv + zero_point).astype(np.float32))


def unfused_legacy(x, scale, zero_point):
    """round(float32(x * (1 / S)) + Z): Z added before rounding, each step rounded to float32."""
    return np.rint(x * (np.float32(1) / np.float32(scale)) + np.float32(zero_point))


def per_tensor_cases(name, seed=0, trials=25, n=203):
    qmin, qmax = DTYPES[name]
    lo, hi = max(qmin, -1000), min(qmax, 1000)
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        scale = float(np.float32(rng.uniform(1e-3, 0.2)))
        zero_point = int(rng.integers(lo, hi + 1)) if name != "qint32" else int(rng.integers(-500, 501))
        yield near_ties(rng, n, scale, zero_point, lo, hi), scale, zero_point, qmin, qmax


def test_the_example_of_the_issue():
    x, scale, zero_point = np.float32(-1.9967061), 0.015660440549254417, 128
    product = np.float64(x) * np.float64(np.float32(1) / np.float32(scale))
    assert np.float32(product) == -127.5 and product == pytest.approx(-127.4999964, abs=1e-7)
    assert Q.quantize(np.array([x]), scale, zero_point, 0, 255)[0] == 0  # round(-127.5) + 128, half to even
    ref = torch.quantize_per_tensor(torch.tensor([x]), scale, zero_point, torch.quint8).int_repr()
    assert ref.item() == 1 == fused_legacy(np.array([x]), scale, zero_point)[0]
    fake = torch.fake_quantize_per_tensor_affine(torch.tensor([x]), scale, zero_point, 0, 255)
    assert fake.item() == Q.fake_quantize(np.array([x]), scale, zero_point, 0, 255).data[0]


@pytest.mark.parametrize("name", ["quint8", "qint8"])
def test_fake_quantize_per_tensor_matches_torch_bit_for_bit_at_ties(name):
    for x, scale, zero_point, qmin, qmax in per_tensor_cases(name):
        ours = Q.fake_quantize(x, scale, zero_point, qmin, qmax).data
        ref = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), scale, zero_point, qmin, qmax).numpy()
        np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", ["quint8", "qint8", "qint32"])
def test_quantize_per_tensor_differs_from_torch_only_where_z_is_added_before_rounding(name):
    differ = 0
    for x, scale, zero_point, qmin, qmax in per_tensor_cases(name):
        ours = Q.quantize(x, scale, zero_point, qmin, qmax).astype(np.int64)
        ref = torch.quantize_per_tensor(torch.from_numpy(x), scale, zero_point,
                                        getattr(torch, name)).int_repr().numpy().astype(np.int64)
        legacy = fused_legacy if name != "qint32" else unfused_legacy
        np.testing.assert_array_equal(np.clip(legacy(x, scale, zero_point), qmin, qmax), ref)
        same = ours == ref
        # where they differ, it is by one step, and x / S is a half-integer up to one float32 rounding of x / S + Z
        assert np.all(np.abs(ours - ref)[~same] == 1)
        product = x * (np.float32(1) / np.float32(scale))
        ulp = np.spacing(np.abs(product) + abs(zero_point))
        assert np.all(np.abs(product - np.floor(product) - 0.5)[~same] <= ulp[~same])
        differ += int((~same).sum())
    assert differ > 0  # the cases do reach the ties


@pytest.mark.parametrize("name", ["quint8", "qint8", "qint32"])
def test_quantize_and_fake_quantize_per_channel_at_ties_against_torch(name):
    qmin, qmax = DTYPES[name]
    lo, hi = max(qmin, -1000), min(qmax, 1000)
    rng = np.random.default_rng(1)
    differ = 0
    for _ in range(10):
        channels = 6
        scales = rng.uniform(1e-3, 0.2, channels).astype(np.float32)
        zero_points = rng.integers(max(lo, -500), min(hi, 500) + 1, channels)
        x = np.stack([near_ties(rng, 37, s, int(z), lo, hi) for s, z in zip(scales, zero_points)])
        ours = Q.quantize(x, scales, zero_points, qmin, qmax, axis=0).astype(np.int64)
        ref = torch.quantize_per_channel(torch.from_numpy(x), torch.from_numpy(scales.astype(np.float64)),
                                         torch.from_numpy(zero_points), 0, getattr(torch, name))
        ref = ref.int_repr().numpy().astype(np.int64)
        legacy = unfused_legacy(x, scales[:, None], zero_points[:, None].astype(np.float32))
        np.testing.assert_array_equal(np.clip(legacy, qmin, qmax), ref)
        assert np.all(np.abs(ours - ref) <= 1)
        differ += int((ours != ref).sum())
        if name != "qint32":
            fake = torch.fake_quantize_per_channel_affine(
                torch.from_numpy(x), torch.from_numpy(scales), torch.from_numpy(zero_points.astype(np.int32)), 0,
                qmin, qmax).numpy()
            np.testing.assert_array_equal(Q.fake_quantize(x, scales, zero_points, qmin, qmax, axis=0).data, fake)
    assert differ > 0


def test_away_from_ties_every_torch_quantizer_agrees():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(1000).astype(np.float32)
    scale, zero_point = Q.qparams(x.min(), x.max(), signed=False)
    product = x * (np.float32(1) / scale)
    away = np.abs(product - np.floor(product) - 0.5) > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_tensor(torch.from_numpy(x), float(scale), int(zero_point), torch.quint8)
    np.testing.assert_array_equal(Q.quantize(x, scale, zero_point, 0, 255)[away], ref.int_repr().numpy()[away])
