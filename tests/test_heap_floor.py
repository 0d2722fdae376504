"""The whole app's heap floor (tools/app_heap.py): main.py's path -- boot, OTA check, update,
reboot -- on the unix port with firmware/ precompiled as `deploy --mpy` ships it. Frozen-like
(module bytecode and the simulated panel's GRAM not counted, as on a board running the frozen
build), the app installs an update with 128 KiB of free heap.
bench.json has the searched figures (app_min_heap_kib, min_heapsize_kib, heap consumers)."""
import pytest

import app_heap
import bench


@pytest.fixture(scope="module")
def heap(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("mpy"))
    bench.compile_mpy(d)
    h = app_heap.AppHeap(d)
    yield h
    h.stop()


def test_whole_app_updates_with_128k_of_free_heap_frozen_like(heap):
    ok, free_before, log = heap.attempt(heapsize_kib=4096, free_kib=128)
    assert ok, log
    assert 128 * 1024 <= free_before < 132 * 1024          # the ballast left what was asked
    assert "installing 1.1.0" in log and "set to boot" in log



def test_whole_app_updates_from_mpy_in_320k_with_the_simulator_left_out(heap):
    """As a board running the .mpy files: the app loads its bytecode into the 320 KiB left free
    (bench.json app_min_heap_kib.mpy_without_sim has the searched floor)."""
    ok, free_before, log = heap.attempt(heapsize_kib=4096, free_kib=320, sim_only=True)
    assert ok, log
    assert 320 * 1024 <= free_before < 324 * 1024
    assert 8 * 1024 < heap.shared < 96 * 1024   # firmware modules the simulator loaded early
    # Too little heap for the update engine's bytecode (the check itself still fits in 120 KiB
    # once the display gives up its buffers): the app fails cleanly, nothing installed.
    ok, _, log = heap.attempt(heapsize_kib=4096, free_kib=120, sim_only=True)
    assert not ok
    assert "no display" in log and "set to boot" not in log
    assert "update to 1.1.0 failed: out of memory loading the update engine" in log
    assert "update failed: out of memory -- keeping 1.0.0" in log and "rebooting into it" not in log
