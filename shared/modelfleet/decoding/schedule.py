"""What one engine step feeds the model: the packed row and the rows that sample.

Decoding sequences come first, one token each; then prefilling prompts in arrival order, one
chunk each, while the step's token budget lasts (a prompt that does not fit waits for the next
step, so chunk boundaries depend only on the prompt itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelfleet.decoding.attention import Segment
from modelfleet.decoding.sequence import SequenceState


@dataclass(slots=True)
class StepInputs:
    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    samplers: list[tuple[SequenceState, int]] = field(default_factory=list)  # seq, its last row

    def add(self, seq: SequenceState, tokens: list[int]) -> None:
        """Append ``tokens`` of ``seq`` (its blocks grow to hold them) and advance it."""
        assert seq.table is not None
        seq.table.ensure(seq.pos + len(tokens))
        self.segments.append(Segment(seq.table, len(self.ids), len(tokens), seq.pos))
        self.ids.extend(tokens)
        self.positions.extend(range(seq.pos, seq.pos + len(tokens)))
        seq.pos += len(tokens)
        if not seq.prefilling:
            self.samplers.append((seq, len(self.ids) - 1))


def pack_step(running: list[SequenceState], budget: int, prefill_chunk: int) -> StepInputs:
    step = StepInputs()
    for seq in running:
        if not seq.prefilling:
            step.add(seq, [seq.next_token])
            budget -= 1
    for seq in running:
        if seq.prefilling:
            n = min(prefill_chunk, len(seq.prompt) - seq.pos)
            if n > budget and step.ids:
                break  # FIFO: later prompts wait for the next step
            step.add(seq, seq.prompt[seq.pos : seq.pos + n])
            budget -= n
    return step


def fork_choices(
    samplers: list[tuple[SequenceState, int]], running: list[SequenceState]
) -> list[tuple[SequenceState, int]]:
    """Each sampling sequence with its logits row; the choices of a request whose prompt just
    finished prefilling join here, sharing its row and (copy-on-write) its prompt's blocks."""
    entries: list[tuple[SequenceState, int]] = []
    for i, (seq, _) in enumerate(samplers):
        entries.append((seq, i))
        if seq.forks:
            assert seq.table is not None
            for child in seq.forks:
                assert child.table is not None
                child.table.fork_from(seq.table, seq.pos)
                child.pos = seq.pos
                child.admitted_at = seq.admitted_at
                entries.append((child, i))
                running.append(child)
            seq.forks = []
    return entries
