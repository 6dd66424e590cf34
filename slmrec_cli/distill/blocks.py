"""Block mapping: teacher layer k·M/B ↔ student layer k·N/B for k = 1..B."""

from __future__ import annotations

from slmrec_cli.errors import SlmrecError


def block_layers(teacher_layers: int, student_layers: int, blocks: int) -> list[tuple[int, int]]:
    """[(teacher layer, student layer)] (1-based) at the end of each of the B blocks."""
    if blocks < 1:
        raise SlmrecError(f"--blocks must be at least 1, got {blocks}")
    if student_layers >= teacher_layers:
        raise SlmrecError(f"--student-layers {student_layers} must be fewer than the teacher's {teacher_layers} "
                          "layers")
    for name, n in (("teacher", teacher_layers), ("student", student_layers)):
        if n % blocks:
            raise SlmrecError(f"--blocks {blocks} does not divide the {name}'s {n} layers; pick a B that divides "
                              f"both {teacher_layers} and {student_layers}")
    m, n = teacher_layers // blocks, student_layers // blocks
    return [(k * m, k * n) for k in range(1, blocks + 1)]
