"""Workers started with `exit_with_parent` die with their parent, even when it is killed with kill -9."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agents.training.signals import exit_with_parent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("use_prctl", [True, False])
def test_a_worker_does_not_outlive_a_killed_parent(tmp_path, use_prctl):
    pid_file = tmp_path / "worker.pid"
    # the parent starts a worker that calls exit_with_parent and would otherwise sleep for a minute
    worker = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from agents.training import signals
        if not {use_prctl}:
            signals.sys.platform = "other"  # the portable watchdog instead of prctl
        signals.exit_with_parent(poll_s=0.1)
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys, time\n"
                               f"subprocess.Popen([sys.executable, '-c', {worker!r}])\ntime.sleep(60)"])
    try:
        deadline = time.time() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.time() < deadline, "the worker did not start"
            time.sleep(0.05)
        worker_pid = int(pid_file.read_text())
        assert _alive(worker_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 5
        while _alive(worker_pid) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(worker_pid), f"worker {worker_pid} outlived its killed parent"
    finally:
        parent.kill()



def test_a_signal_during_a_write_to_the_log_stream_is_still_announced(capfd):
    """Python refuses a reentrant write to a buffered stream: the handler falls back to stderr."""
    from agents.training.signals import StopSignals

    def busy_log(line):
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")

    with StopSignals(busy_log) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    assert stop.requested == "SIGTERM"
    assert "SIGTERM: stopping after this iteration" in capfd.readouterr().err


def test_a_second_signal_is_remembered_even_if_library_code_swallows_its_interrupt():
    """The interrupt of a second signal lands wherever the main thread is; library code may turn it
    into its own error (seen: tensordict's RuntimeError inside a BenchMARL forward), so the command
    line asks `stopped_at_once` before reporting a failure."""
    from agents.training import signals

    assert not signals.stopped_at_once()
    with signals.StopSignals(lambda line: None) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.requested == "SIGINT" and not signals.stopped_at_once()
        try:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)
            except signals.TrainingInterrupted:
                raise RuntimeError("Converting a tensordict to boolean value is not permitted")
        except RuntimeError:
            pass
    assert signals.stopped_at_once()
    signals._stopped_at_once = False
