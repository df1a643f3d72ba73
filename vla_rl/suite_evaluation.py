"""Evaluation of one language-conditioned policy over several tasks (a suite or a list of env ids), as peers tabulate.

Every task runs `evaluate_policy` on the same seeds: episode i of each task starts from env seed `seed + i`. The
summary follows RLinf's MT50 protocol (envs/suites.py has the groups and where they come from):

- per task: success rate with its Wilson 95 % interval (metric `eval/success_rate/<env id>`);
- per group (Meta-World difficulty, when every task has one): the mean of its tasks' success rates
  (`eval/group_success_rate/<group>`), and the **mean of groups** (RLinf's "Avg."; `eval/success_rate_mean_of_groups`);
- the **mean of episodes**: all episodes pooled, with a Wilson interval (`eval/success_rate`). Every task runs the same
  number of episodes, so this is also the mean of the tasks' success rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envs import EnvOptions, task_groups
from vla_rl.evaluation import check_env_fits, evaluate_policy, progress_total, wilson_interval


def check_suite_fits(policy, env_ids: list[str], options: dict[str, EnvOptions]) -> None:
    """Refuse, before any env is built, a task that does not fit the policy or whose instruction does not fit the
    options' instruction length (a suite would otherwise stop at that task, after the tasks before it ran)."""
    for env_id in env_ids:
        check_env_fits(policy, env_id, options[env_id])
    check_instructions_fit(env_ids, options)


def check_instructions_fit(env_ids: list[str], options: dict[str, EnvOptions]) -> None:
    """Every instruction of every task fits its options' instruction_length (checked from the task specs)."""
    from envs import encode_instruction, get_spec, resolve_options
    from vla_rl.base.errors import ConfigError

    for env_id in env_ids:
        length = resolve_options(env_id, options[env_id]).instruction_length
        for text in get_spec(env_id).instructions:
            try:
                encode_instruction(text, length)
            except ConfigError as e:
                raise ConfigError(f"env {env_id}: {e}") from None


def per_env_options(env_ids: list[str], options: EnvOptions | dict[str, EnvOptions] | None) -> dict[str, EnvOptions]:
    if isinstance(options, dict):
        return {e: options[e] for e in env_ids}
    return {e: options or EnvOptions() for e in env_ids}


def suite_progress_total(env_ids: list[str], episodes: int, options: dict[str, EnvOptions]) -> int:
    return sum(progress_total(e, episodes, options[e]) for e in env_ids)


def evaluate_suite(policy, env_ids: list[str], episodes: int, seed: int = 0,
                   options: EnvOptions | dict[str, EnvOptions] | None = None, greedy: bool = True,
                   temperature: float = 1.0, num_envs: int = 8, videos: int = 0, out: str | Path | None = None,
                   progress=None) -> dict[str, Any]:
    """`episodes` episodes of every task (options per task or one for all); the `summarize_suite` dict. Videos of
    the first `videos` episodes of each task go to `out/videos/<env id with '/' as '.'>/`."""
    options = per_env_options(env_ids, options)
    check_suite_fits(policy, env_ids, options)
    tasks = {}
    for env_id in env_ids:
        if progress is not None:
            progress.set_description(f"eval {env_id}")
        tasks[env_id] = evaluate_policy(policy, env_id, episodes, seed, options[env_id], greedy, temperature,
                                        num_envs, videos, out, progress, video_subdir=env_id.replace("/", "."))
    return summarize_suite(tasks)


def evaluate_tasks(policy, tasks: list[str], episodes: int, **kwargs) -> dict:
    """`evaluate_suite`'s summary without per-episode records, plus mean_return / mean_length over all episodes (every
    task runs `episodes`, so the mean over tasks)."""
    result = evaluate_suite(policy, tasks, episodes, **kwargs)
    summaries = list(result["tasks"].values())
    for task in summaries:
        task.pop("per_episode")
    result["mean_return"] = sum(t["mean_return"] for t in summaries) / len(summaries)
    result["mean_length"] = sum(t["mean_length"] for t in summaries) / len(summaries)
    return result


def summarize_suite(tasks: dict[str, dict]) -> dict[str, Any]:
    """Per-task summaries (`evaluation.summarize` dicts, in table order) -> the suite's summary: tasks (each with its
    group), groups, mean of groups, pooled episodes with a Wilson interval, and the flat `metrics`."""
    groups = task_groups(list(tasks))
    group_of = {e: g for g, ids in groups.items() for e in ids}
    out_tasks = {e: {"group": group_of.get(e), **r} for e, r in tasks.items()}
    out_groups = {}
    for g, ids in groups.items():
        n, succ = sum(tasks[e]["episodes"] for e in ids), sum(tasks[e]["successes"] for e in ids)
        out_groups[g] = {"tasks": list(ids), "episodes": n, "successes": succ,
                         "success_rate": sum(tasks[e]["success_rate"] for e in ids) / len(ids),
                         "success_rate_ci95": list(wilson_interval(succ, n))}
    n, succ = sum(r["episodes"] for r in tasks.values()), sum(r["successes"] for r in tasks.values())
    result = {
        "tasks": out_tasks,
        "groups": out_groups,
        "mean_of_groups": (sum(g["success_rate"] for g in out_groups.values()) / len(out_groups)
                           if out_groups else None),
        "episodes": n,
        "successes": succ,
        "success_rate": succ / n if n else 0.0,  # the mean of episodes
        "success_rate_ci95": list(wilson_interval(succ, n)),
    }
    result["metrics"] = {f"eval/{k}": v for k, v in suite_metrics(result).items()}
    return result


def suite_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """Flat metrics of a suite summary, without the `eval/` prefix (a caller adds its own namespace)."""
    metrics: dict[str, Any] = {"success_rate": result["success_rate"], "success_rate_ci95": result["success_rate_ci95"],
                               "episodes": result["episodes"], "successes": result["successes"]}
    metrics.update({f"success_rate/{e}": r["success_rate"] for e, r in result["tasks"].items()})
    metrics.update({f"group_success_rate/{g}": r["success_rate"] for g, r in result["groups"].items()})
    if result["mean_of_groups"] is not None:
        metrics["success_rate_mean_of_groups"] = result["mean_of_groups"]
    return metrics


def format_suite_table(result: dict[str, Any], title: str = "") -> str:
    """The per-task table (task, group, success, Wilson 95 % CI, episodes), then the group means, the mean of groups
    and the mean of episodes — RLinf's table layout, one row per task."""
    rows = [(e, r["group"] or "", r["success_rate"], r["success_rate_ci95"], r["episodes"])
            for e, r in result["tasks"].items()]
    rows += [(f"group {g} ({_count(len(r['tasks']), 'task')})", "", r["success_rate"], r["success_rate_ci95"],
              r["episodes"]) for g, r in result["groups"].items()]
    if result["mean_of_groups"] is not None:
        rows.append((f"mean of {_count(len(result['groups']), 'group')}", "", result["mean_of_groups"], None, None))
    rows.append((f"mean of episodes ({_count(len(result['tasks']), 'task')})", "", result["success_rate"],
                 result["success_rate_ci95"], result["episodes"]))
    width = max(len("task"), *(len(r[0]) for r in rows))
    lines = [title] if title else []
    lines.append(f"{'task':<{width}}  {'group':<9}  success  95% CI       episodes")
    rule = "-" * len(lines[-1])
    for i, (name, group, rate, ci, n) in enumerate(rows):
        if i == len(result["tasks"]):
            lines.append(rule)
        ci_text = f"{ci[0]:.2f}-{ci[1]:.2f}" if ci is not None else ""
        lines.append(f"{name:<{width}}  {group:<9}  {rate:>7.3f}  {ci_text:<11}  {'' if n is None else n:>8}".rstrip())
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
