"""The analyzer's pre- and post-processing as batched tensor code, for the GPU bench.

Same geometry as `facescreen.core` (letterbox to the longer side, pad to the size multiple,
CenterFace decoding at stride 4, NMS, a least-squares similarity onto the template, bilinear
warp with replicated borders), written for tensors on the device so that a frame's pixels
never come back to the host between JPEG and embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's convention


def decode_jpegs(jpegs: Sequence[bytes], device: torch.device) -> tuple[list[torch.Tensor], str]:
    """RGB uint8 CHW frames; on the GPU with nvJPEG (torchvision) where it can, else on the
    CPU (OpenCV or Pillow) and copied over. Returns the frames and which decoder ran."""
    if device.type == "cuda":
        try:
            from torchvision.io import decode_jpeg

            data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
            return list(decode_jpeg(data, device=device)), "nvjpeg"
        except (ImportError, RuntimeError, TypeError):
            pass
    frames = []
    try:
        import cv2

        for j in jpegs:
            bgr = cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError("a JPEG could not be decoded")
            frames.append(torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))))
        how = "opencv"
    except ImportError:
        import io

        from PIL import Image

        for j in jpegs:
            rgb = np.asarray(Image.open(io.BytesIO(j)).convert("RGB"))
            frames.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))))
        how = "pillow"
    return [f.to(device, non_blocking=True) for f in frames], how


@dataclass
class Letterboxed:
    batch: torch.Tensor  # N, 3, H, W float (RGB 0..255), padded right/bottom with 0
    scales: list[float]  # input pixels per frame pixel, per frame
    sizes: list[tuple[int, int]]  # frame (h, w)


def letterbox(frames: Sequence[torch.Tensor], max_side: int, multiple: int,
              dtype: torch.dtype) -> Letterboxed:
    """Scale each frame so its longer side is at most `max_side` (antialiased bilinear, like
    area averaging when shrinking), pad all to one size that is a multiple of `multiple`."""
    scaled, scales, sizes = [], [], []
    for f in frames:
        h, w = int(f.shape[1]), int(f.shape[2])
        s = min(1.0, max_side / max(h, w))
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        x = f.unsqueeze(0).to(dtype)
        if s < 1:
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True,
                              align_corners=False)
        scaled.append(x[0])
        scales.append(s)
        sizes.append((h, w))
    ph = -(-max(x.shape[1] for x in scaled) // multiple) * multiple
    pw = -(-max(x.shape[2] for x in scaled) // multiple) * multiple
    batch = torch.zeros((len(scaled), 3, ph, pw), dtype=dtype, device=scaled[0].device)
    for i, x in enumerate(scaled):
        batch[i, :, :x.shape[1], :x.shape[2]] = x
    return Letterboxed(batch, scales, sizes)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices kept, best first (torchvision's kernel where present, else greedy on the
    IoU matrix)."""
    try:
        from torchvision.ops import nms as tv_nms

        kept: torch.Tensor = tv_nms(boxes.float(), scores.float(), iou)
        return kept
    except ImportError:
        pass
    order = torch.argsort(scores, descending=True)
    b = boxes[order].float()
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    overlap = (inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9)).cpu()
    keep: list[int] = []
    suppressed = torch.zeros(len(b), dtype=torch.bool)
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlap[i] > iou
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


@dataclass
class Faces:
    frame: torch.Tensor  # (n,) frame index of each face
    boxes: torch.Tensor  # (n, 4) in frame pixels
    scores: torch.Tensor  # (n,)
    landmarks: torch.Tensor  # (n, 5, 2) in frame pixels


def decode_centerface(out: dict[str, torch.Tensor], boxed: Letterboxed, threshold: float,
                      nms_iou: float) -> Faces:
    """CenterFace's stride-4 heads into faces of every frame (as core.detection does)."""
    heat, scale = out["heatmap"][:, 0].float(), out["scale"].float()
    offset, lms = out["offset"].float(), out["landmarks"].float()
    n, ys, xs = torch.nonzero(heat > threshold, as_tuple=True)
    scores = heat[n, ys, xs]
    s_h = torch.exp(scale[n, 0, ys, xs]) * 4.0
    s_w = torch.exp(scale[n, 1, ys, xs]) * 4.0
    x1 = (xs + offset[n, 1, ys, xs] + 0.5) * 4.0 - s_w / 2.0
    y1 = (ys + offset[n, 0, ys, xs] + 0.5) * 4.0 - s_h / 2.0
    boxes = torch.stack([x1, y1, x1 + s_w, y1 + s_h], dim=1)
    pts = lms[n, :, ys, xs].reshape(-1, 5, 2)  # (dy, dx) pairs
    land = torch.stack([pts[..., 1] * s_w[:, None] + x1[:, None],
                        pts[..., 0] * s_h[:, None] + y1[:, None]], dim=-1)
    keep = []
    for i in range(len(boxed.scales)):  # NMS per frame
        idx = torch.nonzero(n == i, as_tuple=True)[0]
        if len(idx):
            keep.append(idx[nms(boxes[idx], scores[idx], nms_iou)])
    k = torch.cat(keep) if keep else torch.zeros(0, dtype=torch.long, device=heat.device)
    inv = torch.tensor([1.0 / s for s in boxed.scales], device=heat.device)[n[k]]
    hw = torch.tensor(boxed.sizes, dtype=torch.float32, device=heat.device)[n[k]]
    b = boxes[k] * inv[:, None]
    b = torch.stack([b[:, 0].clamp(min=0), b[:, 1].clamp(min=0),
                     torch.minimum(b[:, 2], hw[:, 1]), torch.minimum(b[:, 3], hw[:, 0])], 1)
    return Faces(n[k], b, scores[k], land[k] * inv[:, None, None])


def similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) least-squares rotation + uniform scale + translation taking each row of
    `src` (n, k, 2) onto `dst` (n, k, 2): the closed form of a similarity fit."""
    ms, md = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - ms, dst - md
    norm = (s ** 2).sum(dim=(1, 2)).clamp(min=1e-12)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(dim=1) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / norm
    tx = md[:, 0, 0] - a * ms[:, 0, 0] + b * ms[:, 0, 1]
    ty = md[:, 0, 1] - b * ms[:, 0, 0] - a * ms[:, 0, 1]
    return torch.stack([torch.stack([a, -b, tx], 1), torch.stack([b, a, ty], 1)], 1)


def align(frames: Sequence[torch.Tensor], faces: Faces, template: torch.Tensor,
          size: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, 3, size, size) chips, RGB 0..255: each face warped onto the template."""
    if len(faces.frame) == 0:
        return torch.zeros((0, 3, size, size), dtype=dtype, device=template.device)
    # chip pixel -> frame pixel: the similarity from the template onto the landmarks
    m = similarity(template.expand(len(faces.frame), -1, -1).float(), faces.landmarks.float())
    v, u = torch.meshgrid(torch.arange(size, device=m.device, dtype=torch.float32),
                          torch.arange(size, device=m.device, dtype=torch.float32),
                          indexing="ij")
    grid = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, -1, 3)
    src = torch.einsum("nij,npj->npi", m, grid.expand(len(m), -1, -1))
    chips = torch.empty((len(m), 3, size, size), dtype=dtype, device=m.device)
    owners = faces.frame.tolist()  # one sync; then one sample call per frame
    for index in sorted(set(owners)):
        sel = torch.tensor([k for k, o in enumerate(owners) if o == index], device=m.device)
        f = frames[index]
        h, w = int(f.shape[1]), int(f.shape[2])
        pts = src[sel]
        norm = torch.stack([(2 * pts[..., 0] + 1) / w - 1, (2 * pts[..., 1] + 1) / h - 1], -1)
        chips[sel] = F.grid_sample(f.unsqueeze(0).to(dtype).expand(len(sel), -1, -1, -1),
                                   norm.reshape(len(sel), size, size, 2).to(dtype),
                                   mode="bilinear", padding_mode="border", align_corners=False)
    return chips
