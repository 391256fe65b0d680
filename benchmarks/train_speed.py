# Copyright (c) monai_bigan contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Training speed of ``BiGANTrainer``:

1. engine overhead: images/s of the Ignite trainer against a minimal hand-written PyTorch loop doing the same work
   (same networks, batch, data, D step + joint E/G step + EMA), alternated in one process; the ratio
   loop / trainer is the overhead (goal <= 1.05);
2. data loading: the share of a training epoch spent waiting for the next batch of the bundle's real loader
   (Ignite's GET_BATCH_STARTED / GET_BATCH_COMPLETED events), on the demo data;
3. scaling: time per iteration and per epoch and peak memory at three image sizes.

Run from the repository root (the demo data are generated on first use):

    python benchmarks/train_speed.py [--device cpu|cuda] [--amp]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import platform
import resource
import time

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer, SliceInferer
from monai.utils import set_determinism

from monai_bigan.engines import BiGANTrainer
from monai_bigan.inferers import AnomalyScorer
from monai_bigan.losses import BiGANLoss
from monai_bigan.networks import BiGAN, Encoder, Generator, JointDiscriminator
from monai_bigan.utils import ema_decay_at, update_ema


def make_bigan(size: int, device: torch.device, spatial_dims: int = 2) -> BiGAN:
    in_shape = (1,) + (size,) * spatial_dims
    channels, strides = (32, 64, 128, 256), (2, 2, 2, 2)
    net = BiGAN(
        Encoder(spatial_dims, in_shape, 64, channels=channels, strides=strides),
        Generator(spatial_dims, 64, in_shape, channels=channels[::-1], strides=strides),
        JointDiscriminator(spatial_dims, in_shape, 64, channels=channels, strides=strides),
    )
    return net.to(device)


def optimizers(net: BiGAN) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    eg = torch.optim.Adam(
        itertools.chain(net.encoder.parameters(), net.generator.parameters()), 2e-4, betas=(0.5, 0.999)
    )
    d = torch.optim.Adam(net.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    return eg, d


def plain_loop(net, ema, eg_opt, d_opt, loader, device, amp, iterations):
    """The same iteration as BiGANTrainer, written by hand."""
    loss_fn = BiGANLoss()
    scaler_d = torch.amp.GradScaler(device.type, enabled=amp)
    scaler_eg = torch.amp.GradScaler(device.type, enabled=amp)
    step = 0
    for step, batch in enumerate(itertools.islice(itertools.cycle(loader), iterations)):
        x = batch["image"].to(device, non_blocking=True)
        net.train()
        z = torch.randn(x.shape[0], net.latent_size, device=device)
        with torch.autocast(device.type, enabled=amp):
            ez, gz = net.encoder(x), net.generator(z)
        d_opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=amp):
            d_loss = loss_fn(net.discriminator(x, ez.detach())[0], net.discriminator(gz.detach(), z)[0], True)
        scaler_d.scale(d_loss).backward()
        scaler_d.step(d_opt)
        scaler_d.update()
        eg_opt.zero_grad(set_to_none=True)
        net.discriminator.requires_grad_(False)
        with torch.autocast(device.type, enabled=amp):
            eg_loss = loss_fn(net.discriminator(x, ez)[0], net.discriminator(gz, z)[0], False)
        scaler_eg.scale(eg_loss).backward()
        net.discriminator.requires_grad_(True)
        scaler_eg.step(eg_opt)
        scaler_eg.update()
        update_ema(ema, net, ema_decay_at(0.999, step))
    return step + 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_trainer(net, ema, eg_opt, d_opt, loader, device, amp, iterations):
    trainer = BiGANTrainer(
        device=device,
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=loader,
        network=net,
        eg_optimizer=eg_opt,
        d_optimizer=d_opt,
        ema_network=ema,
        amp=amp,
        non_blocking=True,
    )
    trainer.logger.setLevel("WARNING")
    trainer.run()


def overhead(
    device: torch.device, amp: bool, size: int, batch: int, iterations: int, repeats: int, spatial_dims: int = 2
) -> dict:
    data = [{"image": torch.rand((1,) + (size,) * spatial_dims) * 2 - 1} for _ in range(batch * 8)]
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    results = {"trainer": [], "loop": []}
    for r in range(repeats + 1):  # the first round warms up
        for kind in ("loop", "trainer") if r % 2 else ("trainer", "loop"):
            set_determinism(0)
            net = make_bigan(size, device, spatial_dims)
            ema = copy.deepcopy(net)
            eg_opt, d_opt = optimizers(net)
            sync(device)
            start = time.perf_counter()
            if kind == "loop":
                plain_loop(net, ema, eg_opt, d_opt, loader, device, amp, iterations)
            else:
                run_trainer(net, ema, eg_opt, d_opt, loader, device, amp, iterations)
            sync(device)
            if r:
                results[kind].append(iterations * batch / (time.perf_counter() - start))
    best = {k: max(v) for k, v in results.items()}
    return {"loop_ips": best["loop"], "trainer_ips": best["trainer"], "ratio": best["loop"] / best["trainer"]}


def loader_wait(device: torch.device, amp: bool, epochs: int, num_workers: int | None = None) -> dict:
    config = ConfigParser()
    config.read_config("bundles/bigan/train.json")
    config["device"] = f"$torch.device('{device}')"
    config["amp"] = amp
    config["max_epochs"] = epochs
    if num_workers is not None:
        config["num_workers"] = num_workers
    if os.environ.get("BENCH_NO_COPY"):
        config["train#dataset#copy_cache"] = False
    config["train#handlers"] = []  # no validation, logging or progress bar: time the loop and the loader only
    trainer = config.get_parsed_content("train#trainer")
    waits = {"wait": 0.0, "start": 0.0}

    def started(_):
        waits["start"] = time.perf_counter()

    def completed(_):
        waits["wait"] += time.perf_counter() - waits["start"]

    trainer.add_event_handler(Events.GET_BATCH_STARTED, started)
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, completed)
    trainer.logger.setLevel("WARNING")
    start = time.perf_counter()
    trainer.run()
    total = time.perf_counter() - start
    images = trainer.state.iteration * config.get_parsed_content("batch_size") * config["slices_per_volume"]
    return {"epoch_s": total / epochs, "wait_fraction": waits["wait"] / total, "ips": images / total}


def scaling(
    device: torch.device, amp: bool, sizes: list[int], batch: int, iterations: int, spatial_dims: int = 2
) -> list[dict]:
    rows = []
    for size in sizes:
        set_determinism(0)
        net = make_bigan(size, device, spatial_dims)
        ema = copy.deepcopy(net)
        eg_opt, d_opt = optimizers(net)
        data = [{"image": torch.rand((1,) + (size,) * spatial_dims) * 2 - 1} for _ in range(batch * 4)]
        loader = torch.utils.data.DataLoader(data, batch_size=batch, drop_last=True)
        plain_loop(net, ema, eg_opt, d_opt, loader, device, amp, 2)  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sync(device)
        start = time.perf_counter()
        run_trainer(net, ema, eg_opt, d_opt, loader, device, amp, iterations)
        sync(device)
        per_iter = (time.perf_counter() - start) / iterations
        if device.type == "cuda":
            memory = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (GPU)"
        else:
            memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB max RSS (+{(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024:.0f})"
        params = sum(p.numel() for p in net.parameters())
        per_volume = score_volume_time(net, size, device, amp, spatial_dims)
        rows.append(
            {
                "size": size,
                "per_iter": per_iter,
                "ips": batch / per_iter,
                "params": params,
                "memory": memory,
                "per_volume": per_volume,
            }
        )
    return rows


def score_volume_time(
    net: BiGAN, size: int, device: torch.device, amp: bool, spatial_dims: int, depth: int = 77
) -> float:
    """Model time to score one volume: 2D models slice by slice (SliceInferer, 128 slices per batch), 3D whole."""
    scorer = AnomalyScorer(net).eval()
    if spatial_dims == 2:
        volume = torch.rand(1, 1, size, size, depth, device=device) * 2 - 1
        inferer = SliceInferer(spatial_dim=2, roi_size=(size, size), sw_batch_size=128, progress=False)
    else:
        volume = torch.rand((1, 1) + (size,) * 3, device=device) * 2 - 1
        inferer = SimpleInferer()
    times = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            inferer(volume, scorer)
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sizes", default="32,64,128")
    parser.add_argument("--spatial_dims", type=int, default=2, choices=(2, 3), help="2D slices or 3D volumes")
    parser.add_argument("--num_workers", type=int, default=None, help="override the bundle's loader workers")
    parser.add_argument("--only", default="overhead,loader,scaling", help="comma-separated parts to run")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp = args.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"machine: {name}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {device}, amp {amp}\n")

    parts = args.only.split(",")
    if "overhead" in parts:
        report_overhead(device, amp, args)
    if "loader" in parts:
        report_loader(device, amp, args)
    if "scaling" in parts:
        report_scaling(device, amp, args)


def report_overhead(device: torch.device, amp: bool, args: argparse.Namespace) -> None:
    size = 64 if args.spatial_dims == 2 else 32
    o = overhead(device, amp, size, args.batch, args.iterations, args.repeats, args.spatial_dims)
    shape = "x".join([str(size)] * args.spatial_dims)
    print(f"| {shape}, batch {args.batch}, {args.iterations} iterations, best of {args.repeats} | images/s |")
    print("| --- | ---: |")
    print(f"| plain PyTorch loop | {o['loop_ips']:.1f} |")
    print(f"| BiGANTrainer (Ignite) | {o['trainer_ips']:.1f} |")
    print(f"| overhead ratio loop / trainer | {o['ratio']:.3f} |\n")


def report_loader(device: torch.device, amp: bool, args: argparse.Namespace) -> None:
    w = loader_wait(device, amp, args.epochs, args.num_workers)
    workers = "bundle default" if args.num_workers is None else args.num_workers
    print(f"| bundle loader (demo data, default config, no validation, num_workers {workers}) | value |")
    print("| --- | ---: |")
    print(f"| seconds per epoch | {w['epoch_s']:.2f} |")
    print(f"| images/s | {w['ips']:.1f} |")
    print(f"| share of time waiting for data | {100 * w['wait_fraction']:.1f} % |\n")


def report_scaling(device: torch.device, amp: bool, args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = scaling(device, amp, sizes, args.batch, max(args.iterations // 2, 5), args.spatial_dims)
    print("| image size | parameters (E+G+D) | s / iteration | images/s | model s / volume | peak memory |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(
            f"| {'x'.join([str(r['size'])] * args.spatial_dims)} | {r['params'] / 1e6:.1f} M | {r['per_iter']:.3f} | {r['ips']:.1f} | {r['per_volume']:.3f} | {r['memory']} |"
        )


if __name__ == "__main__":
    main()
