"""``aepo eval``: sample n answers per benchmark problem and report pass@k.

    aepo eval --model checkpoints/step_500 --backend vllm --n 1024 --temperature 1.0
    aepo eval --model /tmp/tiny --backend hf --benchmarks math500 --limit 5 --n 4 --max-tokens 32

Results go to ``--output`` (default ``./outputs/eval/<model folder name>``): ``problems.jsonl``
(written as problems finish; rerunning the same command resumes), ``results.json`` and
``results.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from aepo.data.benchmarks import BENCHMARKS, DEFAULT_EVAL_DIR, PAPER_BENCHMARKS, load_benchmark
from aepo.data.prompts import FORMAT_INSTRUCTION
from aepo.eval.sampling import PAPER_MAX_TOKENS, PAPER_TOP_P, SamplingSettings

MAX_ISSUES_SHOWN = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=Path,
        required=True,
        help="local Hugging Face model directory (never downloaded)",
    )
    parser.add_argument(
        "--backend",
        choices=("hf", "vllm"),
        default="hf",
        help="hf: transformers on the CPU or one GPU; vllm: the gpu extra",
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        choices=sorted(BENCHMARKS),
        default=list(PAPER_BENCHMARKS),
        metavar="NAME",
        help=f"default: the paper's seven ({', '.join(PAPER_BENCHMARKS)})",
    )
    parser.add_argument(
        "--eval-dir",
        type=Path,
        default=DEFAULT_EVAL_DIR,
        help="folder with <benchmark>/test.jsonl files (default: the copies installed with aepo)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results folder (default: ./outputs/eval/<model folder name>)",
    )
    parser.add_argument("--n", type=int, default=16, help="samples per problem (up to 1024)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=PAPER_TOP_P)
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=PAPER_MAX_TOKENS,
        help="maximum response length in tokens (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N problems of each benchmark"
    )
    parser.add_argument(
        "--problems-per-call",
        type=int,
        default=None,
        help="problems sampled per backend call, i.e. how often progress is "
        "saved (default: from n; at most 8 for hf, 64 for vllm)",
    )
    parser.add_argument(
        "--no-chat-template",
        action="store_true",
        help="feed the raw prompt text even if the tokenizer has a chat template",
    )
    parser.add_argument(
        "--no-instruction",
        action="store_true",
        help="do not append the <think>/\\boxed{} format instruction",
    )
    parser.add_argument(
        "--keep-responses",
        action="store_true",
        help="store every response text in problems.jsonl (large for big n)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard results already in --output instead of resuming",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    hf = parser.add_argument_group("hf backend")
    hf.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    hf.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    hf.add_argument("--batch-size", type=int, default=32, help="sequences per generate call")
    vllm = parser.add_argument_group("vllm backend")
    vllm.add_argument("--tensor-parallel-size", type=int, default=1)
    vllm.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    vllm.add_argument("--max-model-len", type=int, default=None)
    vllm.add_argument(
        "--enforce-eager",
        action="store_true",
        help="no torch.compile and no CUDA graphs (vLLM's enforce_eager): starts sooner, "
        "samples slower; for short evaluations and CPUs",
    )


def default_problems_per_call(backend: str, n: int) -> int:
    """Enough sequences per call to keep the backend busy, few enough that an interruption
    loses little and n = 1024 responses per problem stay within host memory."""
    sequences = 8192 if backend == "vllm" else 256
    ceiling = 64 if backend == "vllm" else 8
    return max(1, min(ceiling, sequences // n))


def _make_sampler(args: argparse.Namespace):
    if args.backend == "vllm":
        from aepo.eval.vllm_sampler import VLLMSampler

        return VLLMSampler(
            args.model,
            tensor_parallel_size=args.tensor_parallel_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len,
            dtype=args.dtype,
            seed=args.seed,
            use_chat_template=not args.no_chat_template,
            enforce_eager=args.enforce_eager,
        )
    from aepo.eval.hf_sampler import TransformersSampler

    return TransformersSampler(
        args.model,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        use_chat_template=not args.no_chat_template,
    )


def flag_problem(args: argparse.Namespace) -> str | None:
    """The first flag out of range, as a sentence naming it; argparse checks only types, and
    a 0 or negative count would reach slicing and range() (``--limit -1`` drops the last
    problem of every benchmark, ``--limit 0`` evaluates none)."""
    at_least_one = {
        "--limit": args.limit,
        "--n": args.n,
        "--max-tokens": args.max_tokens,
        "--problems-per-call": args.problems_per_call,
        "--batch-size": args.batch_size,
        "--tensor-parallel-size": args.tensor_parallel_size,
        "--max-model-len": args.max_model_len,
    }
    for flag, value in at_least_one.items():
        if value is not None and value < 1:
            return f"{flag} must be at least 1, got {value}"
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        return f"--temperature must be a finite number >= 0, got {args.temperature}"
    if not 0 < args.top_p <= 1:
        return f"--top-p must be in (0, 1], got {args.top_p}"
    if not 0 < args.gpu_memory_utilization <= 1:
        return f"--gpu-memory-utilization must be in (0, 1], got {args.gpu_memory_utilization}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = flag_problem(args)
    if problem is not None:
        print(f"aepo eval: {problem}", file=sys.stderr)
        return 2
    from aepo.eval.progress_log import ProgressLog, RunMismatchError
    from aepo.eval.runner import evaluate
    from aepo.model_dir import require_model_dir, silence_transformers_progress

    if args.no_progress:
        silence_transformers_progress()
    try:
        settings = SamplingSettings(
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
        )
        require_model_dir(args.model)
        loaded = [load_benchmark(name, args.eval_dir) for name in args.benchmarks]
    except (ValueError, FileNotFoundError) as error:
        print(f"aepo eval: {error}", file=sys.stderr)
        return 1
    issues = [issue for part in loaded for issue in part.issues]
    for issue in issues[:MAX_ISSUES_SHOWN]:
        print(f"aepo eval: skipping unreadable row: {issue}", file=sys.stderr)
    if len(issues) > MAX_ISSUES_SHOWN:
        print(f"aepo eval: ... and {len(issues) - MAX_ISSUES_SHOWN} more", file=sys.stderr)
    problems = {part.source: part.problems[: args.limit] for part in loaded}

    instruction = None if args.no_instruction else FORMAT_INSTRUCTION
    model = args.model.expanduser().resolve()
    identity = {
        "model": str(model),
        "backend": args.backend,
        "sampling": settings.as_dict(),
        "instruction": instruction,
        "chat_template": not args.no_chat_template,
    }
    output = args.output or Path.cwd() / "outputs" / "eval" / model.name
    per_call = args.problems_per_call or default_problems_per_call(args.backend, args.n)
    try:
        # Checked before the model loads: a mismatch should not cost minutes of loading.
        log = ProgressLog(output, identity, overwrite=args.overwrite)
        outcome = evaluate(
            problems,
            lambda: _make_sampler(args),
            settings,
            log,
            problems_per_call=per_call,
            instruction=instruction,
            keep_responses=args.keep_responses,
            show_progress=not args.no_progress,
        )
    except (FileNotFoundError, ImportError, RunMismatchError) as error:
        print(f"aepo eval: {error}", file=sys.stderr)
        return 1
    print(outcome.markdown_path.read_text())
    print(f"results: {outcome.json_path} and {outcome.markdown_path}")
    return 0
