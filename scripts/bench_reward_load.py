"""The math reward under verl's load: 32 threads scoring at once in a Ray actor held to one
core, for each checking-pool size and wall-clock limit; prints how many correct answers
scored 0 only because the machine was busy (``machine_busy``).

verl 0.9.1's reward workers score a batch from up to 32 threads each, on whatever CPU the node
has left beside the GPUs' host processes; one core is the worst case we size for. The answers
are DAPO-17k ground truths (integers) written in forms only math-verify settles
(``\\frac{2N}{2}``, ``N.0``, ``\\sqrt{N^2}``, and wrong ones), every pair distinct so the
reward's verdict cache does not answer them, with one answer in ``--stall-every`` taken from
the adversarial inputs the text rules refuse (cheap), and one in ``--burn-every`` an answer no
rule refuses that uses its whole CPU budget in a checking process (``(x+y+z)^{60}+k``, distinct
per call; ``--burn-every 1``: every answer, the worst case). Each row prints the checking
pool's settings as the actor read them, how many calls the CPU budget stopped (``timed_out``:
the burners, when each reached a worker), the longest wall time a call spent in its worker
(``in_worker_s``, what the wall-clock limit is compared with) and the 1-minute load average at
its start and end.
The actor loads the reward the way
verl does (``get_custom_reward_fn``) and is pinned to one core with ``sched_setaffinity`` as
well as ``num_cpus=1``, so the checking processes it starts share that core.

    .venv/bin/python scripts/bench_reward_load.py                      # the full table
    .venv/bin/python scripts/bench_reward_load.py --workers 4 --timeouts 5 --calls 64

Run it under ``flock /tmp/aepo-ray.lock`` where several people share the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from aepo.rewards.load_bench import BURNER, load_cases, measure  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2,4,8", help="checking-pool sizes")
    parser.add_argument("--timeouts", default="5,10,20", help="wall-clock limits (s)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=256, help="distinct answers per setting")
    parser.add_argument("--stall-every", type=int, default=32, help="0: no refused answers")
    parser.add_argument(
        "--burn-every", type=int, default=0, help="one answer in N uses its whole CPU budget"
    )
    parser.add_argument("--core", type=int, default=0, help="the core the actor is pinned to")
    parser.add_argument(
        "--no-warm-up", action="store_true", help="start the checking process at the first call"
    )
    args = parser.parse_args(argv)
    import ray

    cases = load_cases(args.calls, args.stall_every, burn_every=args.burn_every)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}},
    )
    print(
        f"{args.threads} threads, {len(cases)} answers ({sum(c[2] is None for c in cases)} "
        f"refused by rule, {sum(BURNER in c[0] for c in cases)} over the CPU "
        f"budget), one Ray actor with num_cpus=1 pinned to core {args.core}"
    )
    header = (
        f"{'workers':>7s} {'timeout_s':>9s} {'machine_busy':>12s} {'timed_out':>9s} "
        f"{'wrong':>5s} {'wall_s':>7s} {'p50_s':>6s} {'max_s':>6s} {'in_worker_s':>11s} "
        f"{'first_check_s':>13s} {'load':>9s}"
    )
    print(header, flush=True)
    try:
        for workers in [int(w) for w in args.workers.split(",")]:
            for timeout_s in [float(t) for t in args.timeouts.split(",")]:
                row = measure(
                    workers, timeout_s, cases, args.threads, args.core, not args.no_warm_up
                )
                if row["pool"][:2] != (workers, timeout_s):
                    raise SystemExit(f"the actor's pool ran with {row['pool']}, not the setting")
                print(
                    f"{workers:7d} {timeout_s:9.1f} {row['machine_busy']:12d} "
                    f"{row['timed_out']:9d} {row['wrong']:5d} {row['wall_s']:7.1f} "
                    f"{row['p50_s']:6.2f} {row['max_s']:6.2f} {row['max_in_worker_s']:11.2f} "
                    f"{row['first_check_s']:13.2f} "
                    f"{row['load'][0]:4.1f}-{row['load'][1]:<4.1f}",
                    flush=True,
                )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
