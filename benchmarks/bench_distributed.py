"""Data-parallel scaling of PGD-10 adversarial training, and (on a GPU) metaadv against a bare loop.

CPU mode (the default) prints, measured in one run, the training throughput (images/s of PGD-10
AT, the global batch trained per second of wall time) of the plain in-process loop with one
thread, and of ``--workers`` Ray Train workers with one thread each (gloo, the real adapter:
TorchTrainer, DDP, metaadv/distributed), and the scaling efficiency
``throughput(N workers) / (N x throughput(1 worker))``. Workers time their own rounds after a
warm-up round, so the worker group's start (reported separately) is not in the throughput; the
per-round validation is off (``--val-size 1``). On a machine with fewer free cores than workers
the efficiency measures the contention, not the method: run it on an idle machine.

    python benchmarks/bench_distributed.py [--workers 2] [--steps-per-round 10] [--rounds 3]
        [--dataset mnist5k] [--batch-size 100]

GPU mode (``--gpu``): images/s of PGD-10 AT on PreActResNet-18 with CIFAR-10 shapes (synthetic
images, 3x32x32, 10 classes), channels_last, through metaadv's trainer (one process), next to a
bare hand-written PGD-10 training loop on the same GPU in the same run, once per precision
(``--precisions bf16,fp32``: bf16 autocast, then fp32 with TF32 as ``--tf32`` says, default on;
the header line says which); the target is metaadv within 10% of the bare loop. Each line is
printed as soon as it is measured. ``--device cpu`` runs the same on the CPU (plumbing only). With
``--ray --workers N`` (N GPUs) it also measures N Ray Train workers with one GPU each.

    python benchmarks/bench_distributed.py --gpu [--batch-size 256] [--steps 20] [--precisions bf16,fp32]
        [--tf32 on] [--device cuda] [--ray --workers 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metaadv.config import TrainConfig
from metaadv.data import DATASETS, Splits, load_splits


# -- the measurement each worker (or the single process) runs ---------------------------------


def _timed_rounds(values: dict, rounds: int, device: torch.device, parallel=None, warmup: int = 1) -> list[float]:
    """Wall seconds of ``rounds`` training rounds after ``warmup`` rounds (validation not timed).

    ``values["_channels_last"]``: the model's weights in channels_last (one process only: after a
    DDP wrap the parameters must not be re-laid out), as the bare GPU loop has them.
    """
    from metaadv.training.run import TrainingRun

    extra = {} if parallel is None else {"parallel": parallel}
    config = TrainConfig.from_dict({k: v for k, v in values.items() if not k.startswith("_")})
    run = TrainingRun(config, splits=_splits(values), device=device, **extra)
    if values.get("_channels_last") and parallel is None:
        run.trainer.model.to(memory_format=torch.channels_last)
    hp = run.config.hparams()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):  # allocator, kernels, cudnn's algorithm search, DDP buckets
        run.trainer.train_round(hp)
    seconds = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        run.trainer.train_round(hp)
        sync()
        seconds.append(parallel.max(time.perf_counter() - start) if parallel is not None else time.perf_counter() - start)
    return seconds


def _splits(values: dict) -> Splits:
    if values.get("_synthetic"):
        return synthetic_cifar(int(values["_synthetic"]))
    return load_splits(values["dataset"])


def synthetic_cifar(n: int) -> Splits:
    """Random CIFAR-10-shaped images and labels (throughput does not depend on their content)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 3, 32, 32), generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return Splits(DATASETS["cifar10"], x, y, x[:100], y[:100], x[:100], y[:100])


def _bench_worker(job: dict) -> None:
    import ray.train

    from metaadv.distributed.train import _torch_distributed
    from metaadv.distributed.workers import WorkerSpec, worker_device
    from metaadv.training.parallel import SINGLE_PROCESS

    spec = WorkerSpec(**job["spec"])
    torch.set_num_threads(spec.threads())
    context = ray.train.get_context()
    device = worker_device(spec)
    parallel = SINGLE_PROCESS if context.get_world_size() == 1 else _torch_distributed(device, context.get_world_rank())
    from torch.backends import cudnn  # imported here: the function travels to the workers by value

    cudnn.benchmark = True
    seconds = _timed_rounds(job["values"], job["rounds"], device, parallel if context.get_world_size() > 1 else None)
    # A result carries the metrics of its newest checkpoint only: attach an (empty) one.
    from metaadv.distributed.train import report_status

    report_status({"seconds": seconds}, context.get_world_rank())


def ray_train_seconds(values: dict, workers: int, rounds: int, gpus: float = 0.0) -> tuple[list[float], float]:
    """(round seconds, fit wall seconds) of ``workers`` Ray Train workers, one thread each."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from metaadv.distributed.workers import WorkerSpec

    spec = WorkerSpec(workers, gpus, 1.0)
    job = {"values": values, "rounds": rounds, "spec": vars(spec).copy()}
    start = time.perf_counter()
    result = TorchTrainer(_bench_worker, train_loop_config=job, scaling_config=spec.scaling_config(),
                          run_config=ray.train.RunConfig(name=f"bench-{time.time_ns()}", storage_path="/tmp/metaadv-bench")).fit()
    return result.metrics["seconds"], time.perf_counter() - start


# -- CPU mode -----------------------------------------------------------------------------------


def cpu_mode(args) -> None:
    import ray

    values = {"method": "pgd-at", "dataset": args.dataset, "steps": 10, "steps_per_round": args.steps_per_round,
              "batch_size": args.batch_size, "eps_ramp_rounds": 0, "val_size": 1, "device": "cpu", "seed": 0}
    images = args.steps_per_round * args.batch_size
    torch.set_num_threads(1)
    plain = statistics.median(_timed_rounds(values, args.rounds, torch.device("cpu")))
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        # One worker before and after the N workers, in the same kind of process (a Ray actor):
        # a machine whose load drifts during the run then touches both sides of the ratio.
        one_a, _ = ray_train_seconds(values, 1, args.rounds)
        many, fit_seconds = ray_train_seconds(values, args.workers, args.rounds)
        one_b, _ = ray_train_seconds(values, 1, args.rounds)
    finally:
        ray.shutdown()
    one, many = statistics.median(one_a + one_b), statistics.median(many)
    print(f"torch {torch.__version__}, PGD-10 AT on {args.dataset}, global batch {args.batch_size}, "
          f"{args.steps_per_round} steps a round, median of {args.rounds} rounds, wall time, one thread per process")
    print(f"{'setting':<34} {'round s':>8} {'images/s':>9}")
    print(f"{'plain loop, this process':<34} {plain:>8.3f} {images / plain:>9.1f}")
    print(f"{'1 Ray Train worker (before, after)':<34} {one:>8.3f} {images / one:>9.1f}"
          f"   ({statistics.median(one_a):.3f} s, {statistics.median(one_b):.3f} s)")
    print(f"{f'{args.workers} Ray Train workers':<34} {many:>8.3f} {images / many:>9.1f}")
    print(f"scaling efficiency: {(images / many) / (args.workers * images / one):.2f} "
          f"(throughput with {args.workers} workers / ({args.workers} x one worker))")
    print(f"Ray Train fit with {args.workers} workers (worker group start, warm-up and timed rounds): {fit_seconds:.1f} s wall")


# -- GPU mode -----------------------------------------------------------------------------------


def bare_pgd10_seconds(x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, rounds: int,
                       precision: str = "bf16", warmup: int = 1) -> list[float]:
    """A hand-written PGD-10 AT loop: PreActResNet-18, channels_last, Adam, bf16 autocast or fp32.

    eps 8/255, step 2/255, one random start; the attack takes input gradients only (parameters
    frozen), then one training step on the adversarial batch. Only the model class is metaadv's.
    """
    import torch.nn.functional as F

    from metaadv.models import PreActResNet18

    device = x.device
    torch.manual_seed(0)
    info = DATASETS["cifar10"]
    model = PreActResNet18(mean=info.mean, std=info.std).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    eps, alpha = 8 / 255, 2 / 255
    bf16 = precision == "bf16"

    def logits(xb):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(xb).float()

    def step(xb, yb):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        delta = (torch.rand_like(xb) * 2 - 1) * eps
        for _ in range(10):
            delta.requires_grad_(True)
            loss = F.cross_entropy(logits(xb + delta), yb)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
            delta = (xb + delta).clamp(0, 1) - xb
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
        loss = F.cross_entropy(logits(xb + delta), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def one_round(offset: int):
        for i in range(steps):
            lo = ((offset + i) * batch) % (len(x) - batch)
            step(x[lo:lo + batch], y[lo:lo + batch])

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for r in range(warmup):
        one_round(r * steps)
    seconds = []
    for r in range(rounds):
        sync()
        start = time.perf_counter()
        one_round((warmup + r) * steps)
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def set_tf32(on: bool, device: torch.device) -> str:
    """Allow (or forbid) TF32 in fp32 matmuls and convolutions; a phrase saying which."""
    if device.type != "cuda":
        return "TF32 n/a (not a CUDA device)"
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on
    return (f"fp32 with TF32 {'ON' if on else 'OFF'} (matmul precision {torch.get_float32_matmul_precision()!r}, "
            f"cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32})")


def _rate(images_per_s: float) -> str:
    """Images/s with a tenth's resolution, or three significant digits below 10 (a CPU plumbing run)."""
    return f"{images_per_s:.1f}" if images_per_s >= 10 else f"{images_per_s:.3g}"


def gpu_mode(args) -> None:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device (--device cpu runs the same measurement on the CPU, for plumbing only)")
    torch.backends.cudnn.benchmark = True
    tf32 = set_tf32(args.tf32 == "on", device)
    n = args.batch_size * args.steps * 2
    splits = synthetic_cifar(n)
    x = splits.train_x.to(device).contiguous(memory_format=torch.channels_last)
    y = splits.train_y.to(device)
    images = args.batch_size * args.steps
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}: PGD-10 AT, PreActResNet-18, CIFAR-10 shapes (synthetic), batch "
          f"{args.batch_size}, channels_last, median of {args.rounds} rounds of {args.steps} steps after {args.warmup} warm-up round(s); {tf32}")
    print(f"{'setting':<40} {'round s':>8} {'images/s':>9}", flush=True)
    values = {"method": "pgd-at", "dataset": "cifar10", "steps": 10, "step_ratio": 0.25, "eps": 8 / 255,
              "steps_per_round": args.steps, "batch_size": args.batch_size, "eps_ramp_rounds": 0, "val_size": 1,
              "device": device.type, "seed": 0, "_synthetic": n, "_channels_last": True}
    ours = None
    for precision in args.precisions:
        bare = statistics.median(bare_pgd10_seconds(x, y, args.batch_size, args.steps, args.rounds, precision, args.warmup))
        print(f"{f'{precision}: bare hand-written PGD-10 loop':<40} {bare:>8.3f} {_rate(images / bare):>9}", flush=True)
        ours = statistics.median(_timed_rounds({**values, "precision": precision}, args.rounds, device, warmup=args.warmup))
        print(f"{f'{precision}: metaadv trainer (one process)':<40} {ours:>8.3f} {_rate(images / ours):>9}", flush=True)
        ratio = bare / ours
        print(f"{precision}: metaadv / bare: {ratio:.3f} (target >= 0.90) {'ok' if ratio >= 0.9 else 'below target'}",
              flush=True)
    if args.workers >= 1 and args.ray:
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)
        try:
            many, fit_seconds = ray_train_seconds({**values, "precision": args.precisions[-1]}, args.workers, args.rounds, gpus=1.0)
        finally:
            ray.shutdown()
        thr = images / statistics.median(many)
        print(f"{f'{args.workers} Ray Train worker(s), 1 GPU each':<40} {statistics.median(many):>8.3f} {thr:>9.1f}")
        print(f"scaling efficiency vs the one-process trainer ({args.precisions[-1]}): {thr / (args.workers * images / ours):.2f}; "
              f"fit wall {fit_seconds:.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="the GPU mode (PreActResNet-18, bf16, vs a bare loop)")
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (CPU mode: default 2; GPU mode: GPUs)")
    p.add_argument("--ray", action="store_true", help="GPU mode: also measure --workers Ray Train workers")
    p.add_argument("--dataset", default="mnist5k", help="CPU mode's data set (default mnist5k)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (CPU default 100, GPU 256)")
    p.add_argument("--steps-per-round", "--steps", dest="steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="GPU mode: untimed rounds before the timed ones (default 1)")
    p.add_argument("--device", default="cuda", help="GPU mode's device (default cuda; cpu only proves the plumbing)")
    p.add_argument("--precisions", default="bf16,fp32", help="GPU mode: comma list of bf16, fp32 (default both, bf16 first)")
    p.add_argument("--tf32", choices=("on", "off"), default="on", help="GPU mode: TF32 in fp32 matmuls and convolutions (default on)")
    args = p.parse_args()
    args.precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    if not args.precisions or any(x not in ("bf16", "fp32") for x in args.precisions):
        p.error(f"--precisions expects a comma list of bf16, fp32; got {','.join(args.precisions)!r}")
    args.steps_per_round = args.steps
    if args.gpu:
        args.batch_size = args.batch_size or 256
        gpu_mode(args)
    else:
        args.batch_size = args.batch_size or 100
        cpu_mode(args)


if __name__ == "__main__":
    main()
