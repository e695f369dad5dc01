"""Image batches in NCHW (students, probes) or NHWC RGB (prototypes), from any layout."""

import numpy as np
import pytest
import torch

from coopt_flower.images import as_nchw_images, as_uint8_nhwc


def _batch():
    return torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 3, 4, 5)


def test_nchw_from_nchw_nhwc_gray_tensor_or_array():
    nchw = _batch()
    nhwc = nchw.permute(0, 2, 3, 1)
    assert torch.equal(as_nchw_images(nchw), nchw)
    assert torch.equal(as_nchw_images(nhwc), nchw)
    assert torch.equal(as_nchw_images(nhwc.numpy()), nchw)
    assert as_nchw_images(nhwc).is_contiguous()
    assert torch.equal(as_nchw_images(nchw[:, 0]), nchw[:, :1])  # (N, H, W) gray: one channel


def test_nchw_refuses_other_dtypes_and_ranks_unless_asked():
    with pytest.raises(TypeError, match="expected uint8 images, got torch.float32"):
        as_nchw_images(_batch().float())
    with pytest.raises(ValueError, match=r"got \(2, 3\)"):
        as_nchw_images(torch.zeros(2, 3, dtype=torch.uint8))
    floats = _batch().float().permute(0, 2, 3, 1).contiguous()  # stored NHWC
    view = as_nchw_images(floats, uint8_only=False, contiguous=False)
    assert view.dtype == torch.float32 and not view.is_contiguous()  # a strided view, no copy
    assert torch.equal(view, _batch().float())


def test_nhwc_expands_gray_to_rgb_and_refuses_what_it_cannot_read():
    rgb = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    assert as_uint8_nhwc(rgb) is rgb
    gray = rgb[..., 0]
    expanded = as_uint8_nhwc(gray)
    assert expanded.shape == (2, 4, 5, 3) and (expanded == gray[..., None]).all()
    assert np.array_equal(as_uint8_nhwc(gray[..., None]), expanded)
    with pytest.raises(TypeError, match="must be uint8"):
        as_uint8_nhwc(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        as_uint8_nhwc(np.zeros((2, 3, 4, 5), np.uint8))  # channels-first is not guessed here
