"""The ``graphsys`` command line: prepare, inspect, verify datasets and train on them.

Each subcommand parses its arguments and calls one library function; the logic
lives in the packages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from graphsys._sizes import format_size
from graphsys.errors import GraphsysError


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="dataset directory to create")
    parser.add_argument(
        "--storage", choices=("raw", "zarr"), default="raw",
        help="feature layout: raw row-major file (mmap, direct I/O) or zarr chunks with LZ4",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _fanouts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers, e.g. 10,10") from None
    return values


def _size(text: str) -> int:
    from graphsys._sizes import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 2GB or 512MiB "
                                         f"({exc})") from None


def _add_storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host-cache", type=_size, default=None,
                        help="RAM budget for feature rows, e.g. 2GB (default: half the "
                             "available memory)")
    parser.add_argument("--pack", type=Path, default=None,
                        help="pack directory (default <dataset>/packs/<fingerprint>)")


def _add_loader_options(parser: argparse.ArgumentParser, d: object) -> None:
    parser.add_argument("--fanouts", type=_fanouts, default=d.fanouts,
                        help="neighbours sampled per layer, input layer first; -1 = all "
                             "(default 10,10; one per layer)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--seed", type=int, default=d.seed)


def _add_infer_parser(commands: argparse._SubParsersAction) -> None:
    infer = commands.add_parser(
        "infer", help="write every node's output (logits) of a trained model, out of core")
    infer.add_argument("path", type=Path, help="dataset directory")
    infer.add_argument("--checkpoint", type=Path, required=True,
                       help="a graphsys train run directory (--out) or its checkpoint.pt")
    infer.add_argument("--out", type=Path, required=True,
                       help="directory to create: outputs.bin (raw float32 rows) and "
                            "outputs.json")
    infer.add_argument("--device", default="cpu")
    infer.add_argument("--batch-size", type=int, default=4096,
                       help="destination nodes per inference batch")
    infer.add_argument("--host-cache", type=_size, default=256 << 20,
                       help="RAM budget; 1/8 of it is the O_DIRECT read buffer (default 256MB)")
    infer.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _infer(args: argparse.Namespace) -> int:
    from graphsys.errors import TrainingConfigError
    from graphsys.graph.dataset import load_dataset
    from graphsys.train.export import export_outputs

    if args.batch_size < 1:
        raise TrainingConfigError(f"--batch-size {args.batch_size} must be >= 1")
    out = export_outputs(load_dataset(args.path), args.checkpoint, args.out,
                         device=args.device, batch_size=args.batch_size,
                         budget=args.host_cache, progress=not args.no_progress)
    print(f"wrote {out / 'outputs.bin'} ({out / 'outputs.json'} says its shape)")
    return 0


def _add_pack_parser(commands: argparse._SubParsersAction) -> None:
    from graphsys.train.trainer import TrainConfig

    d = TrainConfig()
    pack = commands.add_parser(
        "pack", help="sample training epochs offline and pack their feature rows on disk "
                     "(DiskGNN), for graphsys train --storage packed")
    pack.add_argument("path", type=Path, help="dataset directory")
    _add_loader_options(pack, d)
    _add_storage_options(pack)
    pack.add_argument("--overwrite", action="store_true", help="replace an existing pack")
    pack.add_argument("--restart", action="store_true",
                      help="discard an interrupted pack's work instead of resuming it")
    pack.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_plan_parser(commands: argparse._SubParsersAction) -> None:
    from graphsys.train.trainer import TrainConfig

    d = TrainConfig()
    plan = commands.add_parser(
        "plan", help="size the device cache, victim buffer and host cache from a short "
                     "presample; print expected hit rates and traffic")
    plan.add_argument("path", type=Path, help="dataset directory")
    _add_loader_options(plan, d)
    plan.add_argument("--device-cache", type=_size, default=None,
                      help="GPU bytes for feature rows (default: half the free GPU memory, "
                           "or 10%% of the features without a GPU)")
    plan.add_argument("--victim", type=_size, default=None,
                      help="pinned host bytes for evicted rows (default: the device cache's)")
    plan.add_argument("--host-cache", type=_size, default=None,
                      help="RAM bytes for hot rows (default: half the available memory)")
    plan.add_argument("--presample-batches", type=int, default=64,
                      help="batches sampled to plan from (default 64)")
    plan.add_argument("--lookahead", type=int, default=16,
                      help="batches the prefetcher looks ahead (default 16; a sampled "
                           "batch waiting in the queue costs its ids, ~2 MiB at 1024 "
                           "seeds and fanouts 15,10,5)")
    plan.add_argument("--out", type=Path, default=None,
                      help="where to write the plan (default <dataset>/cache-plan.json)")


def _add_train_parser(commands: argparse._SubParsersAction) -> None:
    from graphsys.loader.device_path import GRAPH_MEMORY
    from graphsys.train.feature_setup import SAMPLER_KINDS, STORAGE_KINDS
    from graphsys.train.trainer import FEATURE_NORMS, MODELS, TrainConfig

    d = TrainConfig()
    train = commands.add_parser("train", help="train a GNN mini-batch on a dataset")
    train.add_argument("path", type=Path, help="dataset directory (graphsys prepare ...)")
    train.add_argument("--model", choices=MODELS, default=d.model)
    _add_loader_options(train, d)
    train.add_argument("--layers", type=int, default=None,
                       help="number of GNN layers (must equal the number of fanouts)")
    train.add_argument("--hidden", type=int, default=d.hidden)
    train.add_argument("--heads", type=int, default=d.num_heads, help="GAT attention heads")
    train.add_argument("--lr", type=float, default=d.lr)
    train.add_argument("--weight-decay", type=float, default=d.weight_decay)
    train.add_argument("--dropout", type=float, default=d.dropout)
    train.add_argument("--feature-norm", choices=FEATURE_NORMS, default=d.feature_norm,
                       help="row: scale feature rows to sum 1 (bag-of-words features)")
    train.add_argument("--eval-every", type=int, default=d.eval_every,
                       help="evaluate on val/test every N epochs (0: never)")
    train.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    _add_storage_options(train)
    train.add_argument("--storage", choices=STORAGE_KINDS, default=d.storage,
                       help="where training reads features: auto (memory if they fit the "
                            "host-cache budget, else packed), memory, mmap, direct "
                            "(host cache + O_DIRECT), zarr, packed (DiskGNN: each epoch packed "
                            "while the one before trains)")
    train.add_argument("--pack-disk", type=_size, default=None,
                       help="most disk the epoch packs of --storage packed hold at once, e.g. "
                            "20GB (default: twice the features, or the free space if less)")
    train.add_argument("--plan", type=Path, default=None,
                       help="apply a cache plan (graphsys plan): device cache, victim buffer "
                            "and host-cache size")
    train.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    train.add_argument("--sampler", choices=SAMPLER_KINDS, default=d.sampler,
                       help="auto: on a CUDA device with CuPy, sample on the GPU and gather "
                            "rows by UVA (the device path), else on the CPU; gpu forces the "
                            "device path (its CPU twins on --device cpu); cpu the plain path")
    train.add_argument("--uva", action=argparse.BooleanOptionalAction, default=d.uva,
                       help="device path: gather host feature rows by zero-copy UVA reads "
                            "(default with --graph-memory pinned); --no-uva copies the "
                            "feature table to the GPU once")
    train.add_argument("--graph-memory", choices=GRAPH_MEMORY, default=d.graph_memory,
                       help="device path: graph structure pinned in host memory (read over "
                            "the bus) or copied to the GPU")
    train.add_argument("--out", type=Path, default=None,
                       help="run directory for metrics.jsonl and checkpoint.pt")
    train.add_argument("--resume", action="store_true",
                       help="continue from --out/checkpoint.pt")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_parallel_options(train)
    _add_freeze_options(train)


def _add_parallel_options(train: argparse.ArgumentParser) -> None:
    """Pipeline, profile and torchrun options of ``graphsys train`` (issue 6)."""
    train.add_argument("--pipeline", choices=("pipelined", "serial"), default=None,
                       help="run sample / read / copy / compute in their own threads "
                            "(pipelined, the default under torchrun or with --profile) or "
                            "one after another (serial)")
    train.add_argument("--profile", type=Path, default=None,
                       help="write a Chrome trace (Perfetto JSON) of the pipeline stages "
                            "here and print where the time went")
    train.add_argument("--shared-cache", type=_size, default=0,
                       help="under torchrun: bytes of hot feature rows each rank caches and "
                            "serves to the others, e.g. 2GB (default 0: none)")
    train.add_argument("--checkpoint-every", type=int, default=0,
                       help="also checkpoint every N batches (default 0: at epoch ends)")
    train.add_argument("--dist-timeout", type=float, default=600.0,
                       help="seconds a collective may wait for the other ranks before the "
                            "job fails (default 600)")


def _add_freeze_options(parser: argparse.ArgumentParser) -> None:
    from graphsys.train.freezing import FreezeConfig

    d = FreezeConfig()
    group = parser.add_argument_group("layer freezing (front layers train from a compressed "
                                      "cache of their outputs)")
    group.add_argument("--freeze-at", type=_fanouts, default=None,
                       help="epochs at which the next layer freezes, e.g. 5,10")
    group.add_argument("--freeze-auto", action="store_true",
                       help="freeze the front layer once its relative weight change per epoch "
                            "stays below --freeze-threshold for --freeze-window epochs")
    group.add_argument("--freeze-threshold", type=float, default=d.threshold)
    group.add_argument("--freeze-window", type=int, default=d.window)
    group.add_argument("--freeze-codecs", default=",".join(d.codecs),
                       help="codec per freezing stage, stronger as more layers freeze: fp32, "
                            f"fp16, int8, int4 (default {','.join(d.codecs)})")
    group.add_argument("--freeze-raw", action="store_true",
                       help="store caches as a raw row file instead of LZ4 zarr chunks")
    group.add_argument("--freeze-augment", choices=("dropout", "noise", "none"),
                       default=d.augment,
                       help="augmentation of cached rows in training: none (default; kept "
                            "accuracy best in bench/freezing.py), dropout (the feature dropout "
                            "the next layer had), noise (also the frozen layers' own training "
                            "noise, calibrated)")
    group.add_argument("--freeze-dir", type=Path, default=None,
                       help="where caches go (default <out>/frozen, or a temporary directory)")


def _freeze_config(args: argparse.Namespace) -> object:
    from graphsys.train.freezing import FreezeConfig

    if args.freeze_at is None and not args.freeze_auto:
        return None
    return FreezeConfig(at=args.freeze_at or (), auto=args.freeze_auto,
                        threshold=args.freeze_threshold, window=args.freeze_window,
                        codecs=tuple(c.strip() for c in args.freeze_codecs.split(",")),
                        lz4=not args.freeze_raw, augment=args.freeze_augment,
                        cache_dir=None if args.freeze_dir is None else str(args.freeze_dir))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphsys",
        description="Train GNNs on graphs larger than GPU or host memory.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser("prepare", help="create a dataset directory")
    sources = prepare.add_subparsers(dest="source", required=True)

    synthetic = sources.add_parser("synthetic", help="generate a power-law graph with "
                                   "planted, learnable communities")
    synthetic.add_argument("--nodes", type=int, default=100_000)
    synthetic.add_argument("--edges", type=int, default=2_000_000)
    synthetic.add_argument("--dim", type=int, default=128, help="feature width")
    synthetic.add_argument("--classes", type=int, default=16)
    synthetic.add_argument("--exponent", type=float, default=None,
                           help="power-law exponent of in-degrees")
    synthetic.add_argument("--homophily", type=float, default=None,
                           help="fraction of in-edges from the same community")
    synthetic.add_argument("--noise", type=float, default=None,
                           help="feature noise relative to the class signal")
    synthetic.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--name", default=None)
    _add_output_options(synthetic)

    planetoid = sources.add_parser("planetoid", help="read Planetoid ind.<name>.* files")
    planetoid.add_argument("--raw", required=True, type=Path,
                           help="directory holding ind.<name>.{x,y,tx,ty,allx,ally,graph,...}")
    planetoid.add_argument("--name", default="cora", help="cora, citeseer, pubmed, ...")
    planetoid.add_argument("--row-normalize", action="store_true",
                           help="divide each feature row by its sum, as DGL's "
                           "CoraGraphDataset does (default: the raw counts)")
    _add_output_options(planetoid)

    ogb = sources.add_parser("ogb", help="read an OGB node-property raw layout")
    ogb.add_argument("--raw", required=True, type=Path,
                     help="dataset root holding raw/ and split/<scheme>/")
    ogb.add_argument("--name", default=None)
    ogb.add_argument("--split", default=None, help="split scheme directory under split/")
    ogb.add_argument("--undirected", action="store_true",
                     help="add the reverse of every edge (as for ogbn-arxiv training)")
    _add_output_options(ogb)

    info = commands.add_parser("info", help="describe a dataset, or this installation")
    info.add_argument("path", nargs="?", type=Path, help="dataset directory (omit for the "
                      "installation: versions and optional packages)")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")

    _add_train_parser(commands)
    _add_infer_parser(commands)
    _add_pack_parser(commands)
    _add_plan_parser(commands)

    verify = commands.add_parser("verify", help="recompute a dataset's checksums")
    verify.add_argument("path", type=Path)
    verify.add_argument("--no-progress", action="store_true")
    return parser


def _prepare(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    progress = not args.no_progress
    if args.source == "synthetic":
        from graphsys.datasets.synthetic import SyntheticConfig, generate_synthetic

        overrides = {
            key: value
            for key, value in (("degree_exponent", args.exponent), ("homophily", args.homophily),
                               ("feature_noise", args.noise))
            if value is not None
        }
        config = SyntheticConfig(
            num_nodes=args.nodes, num_edges=args.edges, feat_dim=args.dim,
            num_classes=args.classes, dtype=args.dtype, seed=args.seed, **overrides,
        )
        manifest = generate_synthetic(
            args.out, config, name=args.name, feature_storage=args.storage,
            overwrite=args.overwrite, progress=progress,
        )
    elif args.source == "planetoid":
        from graphsys.datasets.planetoid import prepare_planetoid

        manifest = prepare_planetoid(args.raw, args.out, args.name,
                                     feature_storage=args.storage, overwrite=args.overwrite,
                                     row_normalize=args.row_normalize)
    else:
        from graphsys.datasets.ogb import prepare_ogb

        manifest = prepare_ogb(
            args.raw, args.out, name=args.name, split=args.split, undirected=args.undirected,
            feature_storage=args.storage, overwrite=args.overwrite, progress=progress,
        )
    elapsed = time.perf_counter() - started
    print(f"wrote {args.out} in {elapsed:.1f}s")
    _print_manifest(args.out, manifest)
    return 0


def _print_manifest(path: Path, manifest: object) -> None:
    from graphsys.graph.checksum import size_on_disk
    from graphsys.graph.manifest import Manifest

    assert isinstance(manifest, Manifest)
    on_disk = sum(size_on_disk(path / entry.path) for entry in manifest.arrays.values())
    rows = [
        ("name", manifest.name),
        ("nodes", f"{manifest.num_nodes:,}"),
        ("edges", f"{manifest.num_edges:,}"),
        ("features", f"{manifest.feature_shape} {manifest.feature_dtype} "
                     f"({manifest.feature_storage})"
                     + (", rows normalized to sum 1" if manifest.source.get("row_normalize")
                        else "")),
        ("classes", str(manifest.num_classes)),
        ("splits", ", ".join(f"{k} {v:,}" for k, v in manifest.splits.items())),
        ("on disk", format_size(on_disk)),
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def _info(args: argparse.Namespace) -> int:
    if args.path is None:
        import graphsys
        from graphsys._compat import probe_all

        print(f"graphsys {graphsys.__version__}")
        for probe in probe_all():
            mark = "yes" if probe.available else "no "
            print(f"  {probe.name:<16} {mark}  {probe.detail}")
        from graphsys.train.feature_setup import data_path_summary
        from graphsys.train.trainer import TrainConfig

        for device in ("cpu", "cuda"):
            print(f"  train --device {device:<5} {data_path_summary(TrainConfig(), device)}")
        return 0
    from graphsys.graph.dataset import load_dataset

    dataset = load_dataset(args.path)
    if args.json:
        print(dataset.manifest.dumps(), end="")
    else:
        print(args.path)
        _print_manifest(args.path, dataset.manifest)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from graphsys.graph.verify import verify_dataset

    report = verify_dataset(args.path, progress=not args.no_progress)
    if report.ok:
        print(f"{args.path}: OK ({len(report.checked)} arrays, checksums and contents)")
        return 0
    print(f"{args.path}: FAILED", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    print("The dataset is damaged; re-create it with graphsys prepare.", file=sys.stderr)
    return 1


def _train(args: argparse.Namespace) -> int:
    from graphsys.errors import TrainingConfigError
    from graphsys.graph.dataset import load_dataset
    from graphsys.train.feature_setup import data_path_summary
    from graphsys.train.trainer import TrainConfig, Trainer

    if args.layers is not None and args.layers != len(args.fanouts):
        raise TrainingConfigError(
            f"--fanouts {','.join(map(str, args.fanouts))} has {len(args.fanouts)} entries but "
            f"--layers is {args.layers}; pass one fanout per layer")
    if args.resume and args.out is None:
        raise TrainingConfigError("--resume needs --out, the directory of the earlier run")
    config = TrainConfig(
        model=args.model, fanouts=args.fanouts, hidden=args.hidden, num_heads=args.heads,
        batch_size=args.batch_size, epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, dropout=args.dropout, feature_norm=args.feature_norm,
        seed=args.seed, eval_every=args.eval_every, eval_batch_size=args.eval_batch_size,
        storage=args.storage, host_cache=args.host_cache,
        pack_dir=None if args.pack is None else str(args.pack), pack_disk=args.pack_disk,
        plan=None if args.plan is None else str(args.plan), device=args.device,
        sampler=args.sampler, uva=args.uva, graph_memory=args.graph_memory,
        progress=not args.no_progress, freeze=_freeze_config(args))
    dataset = load_dataset(args.path)
    print(f"{dataset.name}: {dataset.graph.num_nodes():,} nodes, "
          f"{dataset.graph.num_edges():,} edges; {config.model} with fanouts "
          f"{list(config.fanouts)}, {config.epochs} epochs on {config.device}", flush=True)
    print(f"data path: {data_path_summary(config, config.device)}", flush=True)
    from graphsys.train.parallel import parallel_trainer, wants_parallel

    if wants_parallel(args):
        trainer = parallel_trainer(dataset, config, args)
    else:
        for flag, value in (("--checkpoint-every", args.checkpoint_every),
                            ("--shared-cache", args.shared_cache)):
            if value:  # options of the parallel trainer only: never silently ignored
                raise TrainingConfigError(f"{flag} applies to torchrun or --pipeline runs; "
                                          f"add --pipeline serial, or drop {flag}")
        trainer = Trainer(dataset, config, out_dir=args.out,
                          log=lambda line: print(line, flush=True))
    if args.resume:
        print(f"resuming at epoch {trainer.resume()}", flush=True)
    result = trainer.fit()
    if result.best_epoch < 0:
        print("trained without evaluation (--eval-every 0)")
    else:
        print(f"final test accuracy {result.test_acc:.4f} (best val "
              f"{result.best_val_acc:.4f} at epoch {result.best_epoch})")
    if hasattr(trainer, "close"):
        trainer.close()
    return 0


def _pack(args: argparse.Namespace) -> int:
    from graphsys.graph.dataset import load_dataset
    from graphsys.train.feature_setup import pack_for_training
    from graphsys.train.trainer import TrainConfig

    config = TrainConfig(fanouts=args.fanouts, batch_size=args.batch_size, epochs=args.epochs,
                         seed=args.seed, host_cache=args.host_cache, storage="packed",
                         progress=not args.no_progress)
    started = time.perf_counter()
    out = pack_for_training(load_dataset(args.path), config, out=args.pack,
                            overwrite=args.overwrite, restart=args.restart,
                            log=lambda line: print(line, flush=True))
    print(f"wrote {out} in {time.perf_counter() - started:.1f}s; train with: graphsys train "
          f"{args.path} --storage packed --fanouts {','.join(map(str, args.fanouts))} "
          f"--batch-size {args.batch_size} --epochs {args.epochs} --seed {args.seed}"
          + (f" --pack {args.pack}" if args.pack is not None else ""))
    return 0


def _plan(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from graphsys.graph.dataset import load_dataset
    from graphsys.loader.presample import plan_cache
    from graphsys.storage.host_cache import default_host_budget
    from graphsys.storage.open import feature_bytes
    from graphsys.train.feature_setup import train_loader
    from graphsys.train.trainer import TrainConfig

    dataset = load_dataset(args.path)
    config = TrainConfig(fanouts=args.fanouts, batch_size=args.batch_size, epochs=args.epochs,
                         seed=args.seed, progress=False)
    loader = train_loader(dataset.graph, np.asarray(dataset.train_idx, dtype=np.int64), config)
    features = feature_bytes(dataset)
    row_bytes = features // max(dataset.graph.num_nodes(), 1)
    device = args.device_cache
    if device is None:
        device = (torch.cuda.mem_get_info()[0] // 2 if torch.cuda.is_available()
                  else features // 10)
    victim = device if args.victim is None else args.victim
    host = default_host_budget() if args.host_cache is None else args.host_cache
    started = time.perf_counter()
    plan = plan_cache(loader, row_bytes, device_cache=device, victim=victim, host_cache=host,
                      presample_batches=args.presample_batches, lookahead=args.lookahead)
    out = args.out if args.out is not None else Path(args.path) / "cache-plan.json"
    plan.save(out)
    share, traffic = plan.expected_share, plan.expected_bytes_per_epoch
    print(f"planned from {plan.presample_batches} presampled batches in "
          f"{time.perf_counter() - started:.1f}s ({format_size(features)} of features, "
          f"{plan.batches_per_epoch} batches per epoch)")
    print(f"{'tier':<15}{'size':>11}  expected share of requested rows served")
    print(f"{'device cache':<15}{format_size(plan.device_cache_bytes):>11}  "
          f"{share['device']:6.1%}  (hybrid: {plan.static_fraction:.0%} of slots static)")
    print(f"{'victim buffer':<15}{format_size(plan.victim_bytes):>11}  {share['victim']:6.1%}")
    print(f"{'host cache':<15}{format_size(plan.host_cache_bytes):>11}  {share['host']:6.1%}")
    print(f"{'disk':<15}{'':>11}  {share['disk']:6.1%}")
    print(f"on device when asked: {share['prefetched']:.1%} (the prefetcher looks "
          f"{plan.lookahead} batches ahead)")
    none = traffic["no_cache_host_to_device"]
    h2d = traffic["host_to_device"]
    print(f"{'link':<15}{'per epoch':>11}")
    print(f"{'host -> device':<15}{format_size(h2d):>11}  (no cache: {format_size(none)}, "
          f"{1 - h2d / max(none, 1):.0%} less)")
    print(f"{'disk -> host':<15}{format_size(traffic['disk_to_host']):>11}")
    print(f"wrote {out}; train with: graphsys train {args.path} --plan {out} --fanouts "
          f"{','.join(map(str, args.fanouts))} --batch-size {args.batch_size} --seed "
          f"{args.seed}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``graphsys`` command."""
    args = _parser().parse_args(argv)
    handlers = {"prepare": _prepare, "info": _info, "verify": _verify, "train": _train,
                "infer": _infer, "pack": _pack, "plan": _plan}
    try:
        return handlers[args.command](args)
    except GraphsysError as exc:
        print(f"graphsys {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"graphsys {args.command}: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
