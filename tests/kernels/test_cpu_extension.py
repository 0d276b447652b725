"""Building sie's C++ CPU kernels: a build that fails says why, and a lock left by a killed build does not hang
every later load."""

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch

from sie.kernels.cpu_extension import (EXTENSION_NAME, build_lock, cpu_can_run_kernels,
                                      remove_killed_builds_lock)


def _kernels_build(environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sie.cli", "kernels", "build"], capture_output=True, text=True,
                          timeout=300, env=environ)


@pytest.mark.skipif(not cpu_can_run_kernels(), reason="the kernels need an x86 CPU with AVX512-BF16; this one lacks it")
@pytest.mark.skipif(shutil.which("ninja") is None, reason="torch's extension builder needs ninja, not installed here")
def test_a_build_without_a_compiler_names_the_missing_compiler(tmp_path):
    tools = tmp_path / "bin"  # ninja and nothing else: no c++
    tools.mkdir()
    (tools / "ninja").symlink_to(shutil.which("ninja"))
    environ = {**os.environ, "PATH": str(tools), "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    environ.pop("CXX", None)
    result = _kernels_build(environ)
    assert result.returncode == 1
    assert "could not be built here (the warning above says why)" in result.stdout
    assert re.search(r"could not be built \(.*c\+\+: (command )?not found.*\)", result.stderr), result.stderr


def test_a_build_waits_for_another_processs_and_removes_a_killed_ones_lock(tmp_path, caplog):
    """sie's lock (a flock, gone with its process) tells a running build from a killed one: torch's lock file found
    while sie's is held was left by a killed build."""
    import fcntl

    torchs_lock = tmp_path / "lock"
    torchs_lock.touch()
    with caplog.at_level("WARNING", logger="sie.kernels.cpu_extension"), build_lock(tmp_path):
        remove_killed_builds_lock(torchs_lock)
    assert not torchs_lock.exists() and "was killed" in caplog.text
    holder = open(tmp_path / "sie_build.lock", "a")  # another build, which ends in 0.3 s
    fcntl.flock(holder, fcntl.LOCK_EX)
    threading.Timer(0.3, holder.close).start()
    started = time.perf_counter()
    with caplog.at_level("WARNING", logger="sie.kernels.cpu_extension"), build_lock(tmp_path):
        waited = time.perf_counter() - started
    assert 0.25 <= waited < 5 and "waiting for another process's build" in caplog.text


def test_a_killed_builds_lock_does_not_hang_the_next_load(sie_cpu_ops):
    """torch's builder waits forever on a lock file in the build folder; sie removes one a killed build left."""
    from torch.utils.cpp_extension import _get_build_directory

    lock = os.path.join(_get_build_directory(EXTENSION_NAME, verbose=False), "lock")
    open(lock, "w").close()
    try:
        result = _kernels_build(dict(os.environ))
    finally:
        if os.path.exists(lock):
            os.unlink(lock)
    assert result.returncode == 0, result.stderr
    assert "the lock of a build of sie's C++ CPU kernels" in result.stderr


def _thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user and system) each thread of this process has run, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        seconds[int(task)] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
                    reason="needs Linux's per-thread CPU times and two cores")
def test_the_kernels_share_their_work_among_torchs_threads(sie_cpu_ops):
    """at::parallel_for is inlined into the kernels: built without OpenMP, its pragma is ignored and every kernel
    runs on the calling thread alone. With two threads, the other one must do about half the CPU work."""
    # Unpoisoned outputs: conftest's NaN fill of each new tensor runs on torch's threads and would count as shared.
    torch.use_deterministic_algorithms(False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(0)
        lengths = torch.randint(100, 300, (24,), generator=generator)
        cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).int()])
        q, k, v = torch.randn(int(cu_seqlens[-1]), 3, 12, 32, generator=generator).bfloat16().unbind(1)
        x = torch.randn(4096, 1536, generator=generator)

        def run():
            sie_cpu_ops.varlen_attention_bf16(q, k, v, cu_seqlens, cu_seqlens, False, 32**-0.5, -1, -1)
            sie_cpu_ops.quantize_rows(x, 8)

        run()  # starts the thread pool
        caller = threading.get_native_id()
        before = _thread_cpu_seconds()
        for _ in range(20):
            run()
        after = _thread_cpu_seconds()
    finally:
        torch.set_num_threads(threads)
    spent = {task: after[task] - before.get(task, 0.0) for task in after}
    others = sum(seconds for task, seconds in spent.items() if task != caller)
    assert others >= 0.25 * sum(spent.values()), spent


def test_threads_that_ask_at_once_build_once(tmp_path, monkeypatch, caplog):
    """Two threads of one process asking for the kernels together run one build (or one failure, logged once), not
    one each after the other."""
    import torch.utils.cpp_extension

    from sie.kernels import cpu_extension as module

    builds = []

    def failing_build(**kwargs):
        builds.append(kwargs["name"])
        time.sleep(0.3)
        raise RuntimeError("c++: not found")

    monkeypatch.setattr(module, "cpu_can_run_kernels", lambda: True)
    monkeypatch.setattr(torch.utils.cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_build)

    def forget() -> None:  # the next call (here, or a later test's) builds or loads again
        for cached in (module.cpu_extension, getattr(module, "_built_extension", module.cpu_extension)):
            cached.cache_clear()

    forget()
    try:
        with caplog.at_level("WARNING", logger="sie.kernels.cpu_extension"):
            threads = [threading.Thread(target=module.cpu_extension) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        forget()
    assert len(builds) == 1, builds
    assert caplog.text.count("could not be built") == 1, caplog.text
