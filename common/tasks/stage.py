"""Stage ``prepare``: freeze the training tasks into the run directory.

The paper's training pool is MBPP's train split (task_id 601-974) minus the tasks whose reference solution defines a
class: 372 tasks (``common.tasks.mbpp``). Freezing them makes every later stage 1-2 artifact refer to one fixed list
of tasks, whatever happens to the source file afterwards. The evaluation split is not frozen here: ``evaluate`` loads
its own tasks, so resizing the evaluation leaves stages 1-2 up to date.
"""

from __future__ import annotations

from typing import Any

from common.pipeline.artifacts import save_dataset
from common.tasks.mbpp import load_mbpp


def prepare_tasks(ctx: Any) -> dict[str, Any]:
    data = ctx.config.data
    tasks = load_mbpp(data.train_split, data.source, limit=data.max_train_tasks)
    save_dataset(tasks, ctx.output)
    ctx.log(f"MBPP source {data.source or 'MBPP_PATH/hub'}: {len(tasks)} training tasks ({data.train_split}) "
            f"-> {ctx.output}")
    return {"counts": {"train": len(tasks)}}
