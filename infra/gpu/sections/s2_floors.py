"""Section 2: each network's floor alone, its input already on the device: milliseconds per forward
run eagerly (as the worker runs it: fp16 autocast on CUDA) and replayed as one CUDA graph (no launch
cost: what the GPU itself needs), at two batch sizes, with the kernels one forward launches. The gap
between the two is what launching costs; the graph figure is the most a worker could get from that net.
On a CPU: eager wall time and the operators dispatched (the launches a GPU would see)."""
from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from typing import Any, Callable

import torch

from counting import OpCounter, kernel_tally
from record import error_text, log, section_args


def autocast(half: bool, device: torch.device, *, graph: bool = False) -> Any:
    if half and device.type == "cuda":
        # Captured graphs must not use autocast's weight cache (its casts would be freed after capture).
        return torch.autocast("cuda", dtype=torch.float16, cache_enabled=not graph)
    return contextlib.nullcontext()


def timed_ms(run: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Milliseconds per call: CUDA events around `repeats` calls on a GPU, the median wall time on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / repeats
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        walls.append(1000 * (time.perf_counter() - t))
    return statistics.median(walls)


def graph_ms(net: torch.nn.Module, x: torch.Tensor, half: bool, repeats: int) -> float:
    """One forward captured as a CUDA graph, then replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), autocast(half, x.device, graph=True):
        for _ in range(3):  # warm-up on a side stream, as capture requires (cuDNN plans, allocator)
            net(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), autocast(half, x.device, graph=True):
        net(x)
    graph.replay()
    return timed_ms(graph.replay, repeats, x.device)


def launches(net: torch.nn.Module, x: torch.Tensor, half: bool) -> dict[str, Any]:
    if x.device.type == "cuda":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
            with autocast(half, x.device):
                net(x)
            torch.cuda.synchronize()
        return kernel_tally(prof)["total"]
    counter = OpCounter()
    with counter, autocast(half, x.device):
        net(x)
    return {"operators": sum(counter.ops.values()), "launches": sum(counter.launches.values())}


def floor(name: str, plan: Any) -> dict[str, Any]:
    from posepipe.models import CATALOGUE, RandomWeightsWarning, load_model

    device = torch.device(plan.device)
    spec = CATALOGUE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        predictor = load_model(name, device=device, half=plan.half, random_weights=True)
    net = predictor.model.eval()
    height, width = spec.input_size
    batches = plan.floor_frames if spec.stage == "detector" else plan.floor_crops
    out: dict[str, Any] = {"network": name, "stage": spec.stage, "input_chw": [3, height, width],
                           "half": plan.half, "batches": []}
    for batch in batches:
        row: dict[str, Any] = {"batch": batch}
        try:
            with torch.inference_mode():
                x = torch.randn(batch, 3, height, width, device=device)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                    torch.cuda.reset_peak_memory_stats()

                def eager() -> Any:
                    with autocast(plan.half, device):
                        return net(x)

                for _ in range(2 if device.type == "cuda" else 1):
                    eager()  # warm-up: cuDNN's plans, the allocator
                row["eager_ms"] = round(timed_ms(eager, plan.floor_repeats, device), 3)
                row["eager_ms_per_item"] = round(row["eager_ms"] / batch, 4)
                if device.type == "cuda":
                    try:
                        row["graph_ms"] = round(graph_ms(net, x, plan.half, plan.floor_repeats), 3)
                        row["graph_ms_per_item"] = round(row["graph_ms"] / batch, 4)
                        row["launch_share_of_eager"] = round(1 - row["graph_ms"] / row["eager_ms"], 3)
                    except Exception as exc:  # a network that cannot be captured says so; eager stands
                        row["graph_error"] = error_text(exc)
                row["per_forward"] = launches(net, x, plan.half)
                if device.type == "cuda":
                    row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except Exception as exc:  # e.g. out of memory at the big batch: the small one's figures stay
            row["error"] = error_text(exc)
        out["batches"].append(row)
    del predictor, net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    args, plan, record = section_args(__doc__)
    torch.manual_seed(0)  # cuDNN's settings stay torch's defaults, as in a worker
    for name in plan.floor_networks:
        log(f"floor of {name}")
        try:
            record.add("networks", floor(name, plan))
        except Exception as exc:  # one network failing leaves the others
            record.add("networks", {"network": name, "error": error_text(exc)})
    parts = []
    for n in record.data.get("networks", []):
        best = [b for b in n.get("batches", []) if "eager_ms_per_item" in b]
        if best:
            b = best[-1]
            parts.append(f"{n['network']}@{b['batch']}: {b.get('graph_ms_per_item', b['eager_ms_per_item'])} ms/item")
        else:
            parts.append(f"{n['network']}: {n.get('error') or 'no figure'}"[:100])
    record.done("; ".join(parts))


if __name__ == "__main__":
    main()
