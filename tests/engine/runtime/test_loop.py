"""The engine loop's process set-up."""


def test_the_startup_heap_is_frozen_out_of_the_collector_and_later_garbage_still_collected():
    import gc
    import weakref

    from engine.runtime.loop import freeze_startup_heap

    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0

        class Node:
            pass

        later = Node()
        later.self = later  # a cycle made after the freeze
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
