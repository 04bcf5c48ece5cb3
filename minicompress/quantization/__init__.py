"""Quantization: from q = round(w * 255) to integer-only inference.

The affine map of Jacob et al. (2018) ties a real value r to an integer q:

    r = S * (q - Z)                                  dequantize
    q = clamp(round(r / S) + Z, qmin, qmax)          quantize (round half to even)

S (``scale``) is a positive real, Z (``zero_point``) the integer that stands for r = 0 exactly.
The course writes q = round(w * s) with s = 1 / S: the seed example q = round(w * 255) is S = 1/255, Z = 0,
[qmin, qmax] = [0, 255] for w in [0, 1].

The file follows the order of the lecture:

1. the arithmetic: ``qrange``, ``qparams`` (PyTorch's MinMaxObserver formula, bit for bit), ``quantize``,
   ``dequantize``, per tensor and per channel;
2. observers that watch data and choose (S, Z): min-max, moving-average min-max, per-channel, MSE search;
3. fake quantization with the clipped straight-through estimator (for quantization-aware training);
4. integer arithmetic: exact int32 accumulation with float BLAS, the fixed-point multiplier M = 2^-n * M0,
   rounded as TensorFlow Lite's kernels round it (so ``minicompress.export`` files give the same integers);
5. integer-only layers (``QuantizedLinear``, ``QuantizedConv2d``, ...);
6. dynamic quantization (``quantize_dynamic``);
7. static post-training quantization (``prepare`` -> calibrate -> ``convert``) with batch-norm folding;
8. quantization-aware training (``prepare_qat`` -> fine-tune -> ``convert``);
9. weight sharing (Deep Compression): k-means codebooks, fine-tuned with per-cluster summed gradients;
10. sizes in bytes and lossless save / load.

Arithmetic is float32, as in PyTorch: r / S is computed as r * (1 / S) with 1 / S rounded to float32, which is what
PyTorch's fake quantization does bit for bit (see ``quantize`` for where PyTorch's own quantizers differ at ties).
"""
# The chapter is split into files that follow its sections; everything a user calls is importable from here.
from .arithmetic import (  # noqa: F401
    FLOAT32_EPS,
    QTensor,
    dequantize,
    qparams,
    qrange,
    quantize,
    quantize_tensor,
)
from .observers import (  # noqa: F401
    MSEObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    Observer,
    PerChannelMinMaxObserver,
)
from .fake_quant import (  # noqa: F401
    FakeQuantize,
    FakeQuantizeFunction,
    fake_quantize,
)
from .integer import (  # noqa: F401
    DeQuantize,
    EXACT_INT_LIMIT,
    Quantize,
    QuantizedAvgPool2d,
    QuantizedConv2d,
    QuantizedFlatten,
    QuantizedLinear,
    QuantizedMaxPool2d,
    QuantizedReLU,
    _pair,
    _param,
    exact_block_size,
    int_matmul,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize,
    rounding_right_shift,
)
from .dynamic import (  # noqa: F401
    DynamicQuantizedLinear,
    quantize_dynamic,
)
from .static import (  # noqa: F401
    DeQuantStub,
    FusedConv2d,
    FusedLinear,
    QuantStub,
    _flatten_sequential,
    calibrate,
    convert,
    fold_batch_norm,
    prepare,
    prepare_qat,
    quantize_static,
)
from .files import (  # noqa: F401
    _INTEGER_MODULES,
    export_arrays,
    float_nbytes,
    load_quantized,
    pack_bits,
    quantized_nbytes,
    save_quantized,
    unpack_bits,
)
from .sharing import (  # noqa: F401
    SharedWeight,
    export_shared,
    import_shared,
    kmeans_1d,
    share_model_weights,
    share_weights,
    shared_nbytes,
    storage_ratio,
)
