"""Student + autoencoder training of a :class:`StudentTeacher` (EfficientAD, LGST; the teacher stays frozen).

Per step, with I a training batch, I' its colour-augmented copy and P a penalty batch:
L = L_hard(T̂(I), S_local(I)) + mean(S_local(P)²) + mean((T̂(I') − A(I'))²) + mean((A(I') − S_global(I'))²).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from tqdm import tqdm

from ad_pipeline.components.student_teacher.data import PenaltyImages, autoencoder_augment, normalize, shuffled_batches
from ad_pipeline.components.student_teacher.model import StudentTeacher

HARD_QUANTILE = 0.999
TORCH_QUANTILE_LIMIT = 2**24  # torch.quantile refuses larger inputs


def hard_feature_loss(d: torch.Tensor, q: float = HARD_QUANTILE, cap: int = TORCH_QUANTILE_LIMIT,
                      gen: torch.Generator | None = None) -> torch.Tensor:
    """Mean of the elements of ``d`` (any shape) that are ≥ its q-quantile (linear interpolation).

    Above ``cap`` elements the quantile is estimated on a random subset of ``cap`` (seeded by
    ``gen``); the mean is always over all selected elements of ``d``.
    """
    flat = d.flatten()
    sample = flat
    cap = min(cap, TORCH_QUANTILE_LIMIT)
    if flat.numel() > cap:
        sample = flat[torch.randperm(flat.numel(), generator=gen)[:cap].to(flat.device)]
    threshold = torch.quantile(sample.detach(), q)
    return flat[flat >= threshold].mean()


def channel_mean_std(maps: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std), each [1,C,1,1], over batches of equally sized maps [B,C,h,w].

    mean = average over images of the spatial mean; std² = average over images of the
    spatial mean of (f − mean)², computed in one pass as E[f²] − mean² in float64.
    """
    total = sq = None
    n = 0
    for m in maps:
        m = m.double()
        s, s2 = m.mean(dim=(2, 3)).sum(0), m.pow(2).mean(dim=(2, 3)).sum(0)
        total, sq = (s, s2) if total is None else (total + s, sq + s2)
        n += m.shape[0]
    if n == 0:
        raise ValueError("channel_mean_std needs at least one map")
    mean = total / n
    var = (sq / n - mean.pow(2)).clamp_min(0)
    return mean.float().view(1, -1, 1, 1), var.sqrt().float().view(1, -1, 1, 1)


@torch.no_grad()
def teacher_statistics(model: StudentTeacher, images: torch.Tensor, batch_size: int = 8,
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel (mean, std) [1,C,1,1] of the raw teacher output over uint8 images [N,3,H,W]."""
    device = model.teacher_mean.device
    batches = (model.teacher(normalize(images[i:i + batch_size].float().div(255)).to(device))
               for i in range(0, images.shape[0], batch_size))
    return channel_mean_std(tqdm(batches, desc="teacher statistics", disable=not progress,
                                 total=-(-images.shape[0] // batch_size)))


def _penalty_stream(penalty: PenaltyImages | None, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor | None]:
    while True:
        yield None if penalty is None else penalty.sample(batch_size, gen)


def train_student_autoencoder(model: StudentTeacher, images: torch.Tensor, penalty: PenaltyImages | None, *,
                              label: str, steps: int, lr: float = 1e-4, weight_decay: float = 1e-5,
                              batch_size: int = 1, penalty_batch_size: int | None = None, gen: torch.Generator,
                              quantile_cap: int = TORCH_QUANTILE_LIMIT, progress: bool = True) -> list[float]:
    """Train ``model.student`` and ``model.autoencoder`` in place; return the loss of every step.

    ``images``: uint8 [N,3,H,W] training images (already resized). ``model.teacher_mean/std``
    must be set. ``label``: the progress bar's. ``penalty_batch_size``: penalty images per step
    (None: ``batch_size``; CSAD's official code draws 1 for a batch of 2). Adam +
    StepLR(⌊0.95·steps⌋, ×0.1) stepped every iteration. Randomness (sampling, augmentation, penalty draws) comes from ``gen``; dropout
    from torch's global RNG, which the caller seeds (see ``EfficientAD.fit``).
    """
    device = model.teacher_mean.device
    params = [*model.student.parameters(), *model.autoencoder.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(0.95 * steps)), gamma=0.1)
    model.teacher.eval()
    model.student.train()
    model.autoencoder.train()
    c = model.teacher_mean.shape[1]
    batches = shuffled_batches(images.shape[0], batch_size, gen)
    penalties = _penalty_stream(penalty, penalty_batch_size or batch_size, gen)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=label, disable=not progress)
    for _ in bar:
        x = images[next(batches)].float().div(255)
        x_aug = autoencoder_augment(x, gen)
        x, x_aug = normalize(x).to(device), normalize(x_aug).to(device)
        with torch.no_grad():
            t_hat = model.teacher_features(x)
            t_hat_aug = model.teacher_features(x_aug)
        loss = hard_feature_loss((t_hat - model.student(x)[:, :c]).pow(2), cap=quantile_cap, gen=gen)
        p = next(penalties)
        if p is not None:
            loss = loss + model.student(normalize(p).to(device))[:, :c].pow(2).mean()
        ae = model.autoencoder(x_aug)
        loss = loss + (t_hat_aug - ae).pow(2).mean() + (ae - model.student(x_aug)[:, c:]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses
