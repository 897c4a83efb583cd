"""The paper's prompts: system message, signature line, chat messages and a completion prompt for base models.

The asserts are never shown to the model (docs/design.md §2); the only hint beyond the task text is the signature of the
*last* ``def`` in the reference solution, written the way the reference notebooks' regex found it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Union

from common.config import PAPER_SYSTEM_PROMPT

SYSTEM_PROMPT = PAPER_SYSTEM_PROMPT
SIGNATURE_TEMPLATE = "\nThe main function is defined by the function signature: {signature}\n"
OPEN_FENCE = "```python\n"
CLOSE_FENCE = "```"

# `def name(args)`: no blank between name and "(" and args up to the first ")", as in the reference code. This is
# why 5 test tasks (32, 134, 160, 318, 392: written `def name (...)`) get no signature line; the paper preset
# reproduces that. `[^)]*` rather than a greedy `.*` keeps a trailing comment out of the args (task 966).
_SIGNATURE_RE = re.compile(r"def (\w+)\(([^)]*)\)")

Messages = list[dict[str, str]]
Prompt = Union[str, Messages]


def signature_of(reference_code: str) -> str | None:
    """``def name(args)`` of the last ``def`` in the reference solution (no colon), or None when there is none."""
    matches = _SIGNATURE_RE.findall(reference_code or "")
    if not matches:
        return None
    name, args = matches[-1]
    return f"def {name}({args})"


def user_message(task: Mapping[str, Any]) -> str:
    """The task text plus the signature line when the reference has one."""
    text = task["text"]
    signature = signature_of(task.get("code", ""))
    return text + SIGNATURE_TEMPLATE.format(signature=signature) if signature else text


def chat_messages(task: Mapping[str, Any], system_prompt: str = SYSTEM_PROMPT) -> Messages:
    """System + user messages for instruct models (Gemma-3's template folds the system turn into the user turn)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user_message(task)}]


def completion_prompt(task: Mapping[str, Any], system_prompt: str = SYSTEM_PROMPT) -> str:
    """A plain prompt for base models (no chat template). It ends in an opening ```python fence so the model
    continues with code, and generation stops at the closing fence."""
    header = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{header}Task: {user_message(task).rstrip()}\n\nSolution:\n{OPEN_FENCE}"


HUMANEVAL_INSTRUCTION = "Complete the following Python function. Return the whole function in one code block."


def humaneval_prompt(task: Mapping[str, Any], style: str, system_prompt: str = SYSTEM_PROMPT) -> Prompt:
    """A HumanEval-style task (``task["prompt"]`` = imports, signature and docstring). Chat: the instruction and
    the prompt in a fenced block; the reply's block is the whole function. Completion: the prompt inside an opened
    ```python fence, so the model continues the body and stops, as for MBPP, at the closing fence (a stopping
    rule that needs no per-benchmark stop strings)."""
    code = task["prompt"].rstrip() + "\n"
    if style == "chat":
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return messages + [{"role": "user", "content": f"{HUMANEVAL_INSTRUCTION}\n\n{fence(code)}"}]
    header = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{header}{HUMANEVAL_INSTRUCTION}\n\n{OPEN_FENCE}{code}"


def program_from_reply(task: Mapping[str, Any], code: str, style: str) -> str:
    """The program a reply stands for. MBPP: the extracted code. HumanEval: completion style continues the prompt
    (prompt + code); a chat reply's whole function follows the prompt, whose helpers and imports it may rely on
    (the prompt's stub, a docstring-only function, is then redefined)."""
    if not task.get("prompt"):
        return code
    if style == "completion":
        return task["prompt"].rstrip() + "\n" + code
    return task["prompt"] + "\n" + code


def build_prompt(task: Mapping[str, Any], style: str, system_prompt: str = SYSTEM_PROMPT) -> Prompt:
    """The prompt in the form the model takes: a message list ('chat') or a string ('completion')."""
    if task.get("prompt"):
        if style not in ("chat", "completion"):
            raise ValueError(f"prompt style must be 'chat' or 'completion', got {style!r}")
        return humaneval_prompt(task, style, system_prompt)
    if style == "chat":
        return chat_messages(task, system_prompt)
    if style == "completion":
        return completion_prompt(task, system_prompt)
    raise ValueError(f"prompt style must be 'chat' or 'completion', got {style!r}")


def retry_prompt(prompt: Prompt, failed_code: str, retry_message: str) -> Prompt:
    """Stage 2a: a re-queued prompt with the last failed solution appended, as the reference notebooks did."""
    addition = f"\n\n{fence(failed_code)}\n{retry_message}\n"
    if isinstance(prompt, str):
        body = prompt[: -len(OPEN_FENCE)] if prompt.endswith(OPEN_FENCE) else prompt
        return f"{body.rstrip()}{addition}\nSolution:\n{OPEN_FENCE}"
    messages = [dict(m) for m in prompt]
    messages[-1]["content"] = messages[-1]["content"].rstrip("\n") + addition
    return messages


def fence(code: str) -> str:
    """Code in a ```python block: the form stored as DPO chosen/rejected."""
    return f"{OPEN_FENCE}{code.strip(chr(10))}\n{CLOSE_FENCE}"


def completion_target(code: str, style: str) -> str:
    """What the model should produce after the prompt: a fenced block for chat models, or (completion style,
    whose prompt already opened the fence) the code and the closing fence."""
    if style == "completion":
        return f"{code.strip(chr(10))}\n{CLOSE_FENCE}"
    return fence(code)


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The exact text fed to the model: the chat template with ``add_generation_prompt=True`` for messages."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
