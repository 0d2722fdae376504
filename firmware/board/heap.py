# Free heap and its low-water mark (the OTA check's minimum_free_heap_size), for every board.
import gc


class HeapWatch:
    def __init__(self):
        self._min_free = gc.mem_free()

    def free_heap(self):
        free = gc.mem_free()
        if free < self._min_free:
            self._min_free = free
        return free

    def min_free_heap(self):
        self.free_heap()
        return self._min_free
