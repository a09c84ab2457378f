"""Ordered parallel map over worker processes with bounded in-flight work (used by `prepare`).

Results come back in input order; at most `workers x in_flight_per_worker` items are handed out and
not yet consumed, so a slow consumer makes the workers wait instead of piling results up in memory.
A worker that dies or raises ends the map with a `WorkerError` naming the item.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import multiprocessing.reduction
import queue
import signal
import threading
import traceback

# With --workers N, at most N x this many segments (one image variant's crops within one shard) are
# handed to workers and not yet written: one being computed and one queued per worker keeps them busy,
# and a writer slower than the workers makes them wait instead of piling results up in memory.
IN_FLIGHT_PER_WORKER = 2



# ----------------------------------------------------------------------------- worker processes


class WorkerError(Exception):
    """A worker failed on item `index` (None: the worker was idle): an exception in `fn` (`details`
    holds its traceback) or the worker process ended (killed, e.g. by the out-of-memory killer)."""

    def __init__(self, index: int | None, reason: str, details: str = ""):
        super().__init__(reason)
        self.index, self.reason, self.details = index, reason, details


def _worker_loop(fn, conn) -> None:
    """A worker process: items in, ("ok", fn(item)) or ("error", (reason, traceback)) out, in order,
    until the parent closes its end of the pipe."""
    # Ctrl-C reaches every process of the terminal's process group: only the parent acts on it (it
    # stops the workers); a worker interrupted mid-item would only print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Items are read by a thread as they come, so the parent's send never waits for this process:
    # it could be blocked sending a large result the parent will only read after that send (deadlock).
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    stop = object()

    def read() -> None:
        try:
            while True:
                inbox.put(conn.recv())
        except BaseException:  # EOF: the parent is done or gone; anything else ends the worker too
            inbox.put(stop)

    threading.Thread(target=read, daemon=True).start()
    while (item := inbox.get()) is not stop:
        try:
            out = ("ok", fn(item))
            payload = multiprocessing.reduction.ForkingPickler.dumps(out)
        except Exception as e:
            out = ("error", (f"{type(e).__name__}: {e}", traceback.format_exc()))
            payload = multiprocessing.reduction.ForkingPickler.dumps(out)
        del out
        try:
            conn.send_bytes(payload)
        except OSError:  # the parent has gone
            return


def _stop_workers(procs: list, conns: list, graceful: bool) -> None:
    """Closes the pipes (idle workers end on EOF) and joins every worker; terminates (then kills) the
    ones still running unless `graceful` (all items done), or still alive after a grace period."""
    for conn in conns:
        conn.close()
    if graceful:
        for p in procs:
            p.join(timeout=10)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join()


def ordered_map(fn, items, workers: int, in_flight_per_worker: int = IN_FLIGHT_PER_WORKER):
    """Yields fn(item) for each item in order, computed by `workers` spawned processes.

    At most `workers * in_flight_per_worker` items are handed out and not yet taken by the caller
    (the one being yielded included): a caller slower than the workers makes them wait rather than
    letting results pile up. Each worker has its own pipe, so one that dies is an error naming its
    item (WorkerError), not a hang, and stopping the rest is safe at any point. Closing the generator
    (or an exception, KeyboardInterrupt included) terminates and joins the workers. workers <= 1:
    a plain in-process map.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    limit = max(1, workers * in_flight_per_worker)
    # spawn: the parent may already hold TensorFlow's threads, which fork does not survive
    ctx = multiprocessing.get_context("spawn")
    procs, conns, assigned = [], [], []  # assigned[w]: indices sent to worker w, not yet answered
    ready: dict = {}
    sent = 0
    finished = False

    def died(w: int) -> WorkerError:
        p = procs[w]
        p.join(timeout=5)
        code = p.exitcode
        if code is None:
            how = "its pipe closed"
        elif code < 0:
            how = f"killed by signal {-code}" + (", e.g. by the out-of-memory killer" if code == -9 else "")
        else:
            how = f"exit code {code}"
        index = assigned[w][0] if assigned[w] else None
        return WorkerError(index, f"a worker process ended unexpectedly ({how})")

    def receive(timeout) -> None:
        for conn in multiprocessing.connection.wait(conns, timeout):
            w = conns.index(conn)
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                raise died(w) from None
            if not assigned[w]:
                raise WorkerError(None, "a worker process answered an item it was not given")
            index = assigned[w].popleft()
            if status != "ok":
                raise WorkerError(index, *payload)
            ready[index] = payload

    try:
        for _ in range(min(workers, len(items))):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_worker_loop, args=(fn, child_end), daemon=True, name="prepare-worker")
            procs.append(p)
            conns.append(parent_end)
            assigned.append(collections.deque())
            p.start()
            child_end.close()  # only the worker holds it now: its death reads as EOF here
        for i in range(len(items)):
            while True:
                while sent < len(items) and sent - i < limit:  # hand out up to the bound
                    w = min(range(len(conns)), key=lambda k: len(assigned[k]))
                    try:
                        conns[w].send(items[sent])
                    except OSError:
                        raise died(w) from None
                    assigned[w].append(sent)
                    sent += 1
                if i in ready:
                    receive(0)  # take what is done so the workers can go on while the caller works
                    break
                receive(None)
            result = ready.pop(i)
            yield result
            del result
        finished = True
    finally:
        _stop_workers(procs, conns, graceful=finished)

