"""The future that `WorkerPool.run` returns: a concurrent.futures.Future
that asyncio code can also await."""
from concurrent.futures import Future


class PoolFuture(Future):
    """A `concurrent.futures.Future`; `await fut` resumes on the awaiting loop."""

    def __await__(self):
        import asyncio  # only for users who await: keeps `import fastpool` light

        return asyncio.wrap_future(self).__await__()
