"""Trains the small byte-level BPE tokenizer that tiny test models use (``common/resources/tiny_tokenizer``).

Why: a tiny model (hidden 32, 2 layers) with Gemma's 262k vocabulary spends nearly all of its time on the
262k-wide output layer — a 2-pair DPO step took ~36 s on 2 cores. With 4k tokens the same step takes well under a
second, and prompts, chat templates, fences and stop logic still go through a real tokenizer. Trained offline on
the Python standard library's own sources (always present) plus the paper's prompt text; deterministic.

Run: ``.venv/bin/python scripts/build_tiny_tokenizer.py``
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "common" / "resources" / "tiny_tokenizer"
VOCAB_SIZE = 4096
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def corpus() -> list[str]:
    """Python sources of the stdlib (sorted, first ~3 MB) plus the prompt vocabulary the pipeline uses."""
    import sys

    sys.path.insert(0, str(ROOT))
    from common.config import PAPER_SYSTEM_PROMPT
    from common.tasks.mbpp import DEMO_TASKS, read_tasks_jsonl

    texts = [PAPER_SYSTEM_PROMPT, "```python\n", "\n```\n", "Task: ", "Solution:\n"]
    for task in read_tasks_jsonl(DEMO_TASKS):
        texts += [task["text"], task["code"]]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    size = 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="ignore")
        texts.append(text)
        size += len(text)
        if size > 3_000_000:
            break
    return texts


def main() -> None:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tokenizer.token_to_id("<bos>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>",
                                   additional_special_tokens=["<start_of_turn>", "<end_of_turn>"])
    fast.padding_side = "left"
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(OUT))
    print(f"{OUT}: vocabulary {len(fast)}")


if __name__ == "__main__":
    main()
