"""Section 0: what the machine is. Versions of what the job imports (and what is missing), the GPU and
its clocks, whether NVDEC's library is there (`ldconfig -p`: libnvcuvid) and whether the carried
FFmpeg has a CUDA decoder, and the host probes the device path's crops rely on."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from record import error_text, section_args

# distribution -> the module it is imported as
PACKAGES = {"torch": "torch", "numpy": "numpy", "pyarrow": "pyarrow", "av": "av", "ray": "ray",
            "opencv-python-headless": "cv2", "pillow": "PIL", "scipy": "scipy", "smart-open": "smart_open",
            "boto3": "boto3", "decord": "decord", "click": "click", "rich": "rich", "pyyaml": "yaml",
            "psutil": "psutil", "pytest": "pytest"}
SMI_FIELDS = ("name", "driver_version", "memory.total", "pstate", "clocks.sm", "clocks.max.sm", "clocks.mem",
              "clocks.max.mem", "clocks.applications.graphics", "power.draw", "power.limit", "temperature.gpu",
              "persistence_mode", "compute_mode", "utilization.gpu")


def run(cmd: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {error_text(exc)}"
    return done.stdout if done.returncode == 0 else f"failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}"


def versions() -> dict[str, str | None]:
    """Each distribution's version where its module can be imported here, else None."""
    found: dict[str, str | None] = {}
    for name, module in PACKAGES.items():
        try:
            found[name] = version(name) if find_spec(module) is not None else None
        except (PackageNotFoundError, ImportError, ValueError):
            found[name] = None
    return found


def gpu() -> dict:
    import torch

    out: dict = {"cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
                 "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}", devices=torch.cuda.device_count())
    text = run(["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"])
    if text is not None and not text.startswith("failed"):
        out["nvidia_smi"] = [dict(zip(SMI_FIELDS, (v.strip() for v in line.split(",")))) for line in text.splitlines() if line.strip()]
    else:
        out["nvidia_smi"] = text or "nvidia-smi not found"
    return out


def nvdec() -> dict:
    """NVDEC through FFmpeg needs libnvcuvid (the driver's) and an FFmpeg built with cuvid/nvdec."""
    text = run(["ldconfig", "-p"]) or ""
    libs = sorted({line.split()[0] for line in text.splitlines() if "nvcuvid" in line or "nvidia-encode" in line})
    out: dict = {"ldconfig_libs": libs, "libnvcuvid": any("nvcuvid" in name for name in libs)}
    try:
        import av

        out["pyav_cuda_codecs"] = sorted(c for c in av.codecs_available if "cuvid" in c or "nvdec" in c or "nvenc" in c)
        hw = getattr(av, "codec", None) and getattr(av.codec, "hwaccel", None)
        out["pyav_hwdevices"] = sorted(getattr(hw, "hwdevices_available", lambda: [])()) if hw else None
    except Exception as exc:  # PyAV missing or too old to say: the rest of this section still stands
        out["pyav"] = error_text(exc)
    return out


def host() -> dict:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    mem = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    shm = shutil.disk_usage("/dev/shm").total / 2**30 if Path("/dev/shm").exists() else None
    return {"python": platform.python_version(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gib": mem, "dev_shm_gib": round(shm, 1) if shm else None, "kernel": platform.release()}


# The host probes whose answers the device path's crops follow: (module, function), wherever the
# models keep them now (the first of each name found).
PROBES = {"pillow_vertical_first": ("ondevice", "hmr"), "spin_corners_match_numpy": ("hmr", "ondevice")}


def probes() -> dict:
    import importlib

    out: dict = {}
    for name, modules in PROBES.items():
        found = [m for m in (importlib.import_module(f"posepipe.models.{m}") for m in modules) if hasattr(m, name)]
        out[name] = getattr(found[0], name)() if found else f"absent: no {name} in posepipe.models.{'/'.join(modules)}"
    return out


def main() -> None:
    args, plan, record = section_args(__doc__)
    from dataclasses import asdict

    record.put("plan", asdict(plan))
    for key, probe in (("host", host), ("versions", versions), ("gpu", gpu), ("nvdec", nvdec), ("crop_probes", probes)):
        try:
            record.put(key, probe())
        except Exception as exc:  # one probe failing says so and leaves the others
            record.put(key, {"error": error_text(exc)})
    manifest = Path(os.environ.get("POSEPIPE_GPU_CARRIED", ".gpu/MANIFEST.json"))
    record.put("carried", json.loads(manifest.read_text()) if manifest.is_file() else None)
    g, v = record.data.get("gpu", {}), record.data.get("versions", {})
    record.done(f"{g.get('name', 'no GPU')}, torch {v.get('torch')} (CUDA {g.get('torch_cuda')}), av {v.get('av')}, "
                f"ray {v.get('ray')}, libnvcuvid {'yes' if record.data['nvdec'].get('libnvcuvid') else 'no'}, "
                f"probes {record.data.get('crop_probes')}")


if __name__ == "__main__":
    main()
