"""A training reader's position in an epoch, in a form that survives a change of world size.

Each rank reads its own rows of the split: a *layout* lists, per rank, the spans it reads in
order, a span being `(row group id, first row, rows)` with row-group ids in split order
(files by name, row groups in file order). At the start of every epoch the layout is the
standard one (`assign_row_groups`: whole row groups balanced by rows). A position is

    {"epoch": e, "batches": b, "batch_size": B, "world_size": W, "layout": None | spans per rank}

and means: every rank of the W has consumed the first b * B rows of its spans (layout None:
the standard layout for W). That is enough to know exactly which rows of the epoch are
done, whatever the world size that resumes it: `relayout` takes the rows not yet consumed,
in rank order, and cuts them into W' contiguous, equal parts (within one row) for the new
ranks. Every row of the epoch is then consumed exactly once over the whole job, apart from
the drop_last remainder (fewer than W' * B' rows at the end of the epoch).

A shuffled epoch (shuffle windows) permutes rows inside each window, so the rows consumed
of a half-read window are scattered: such an epoch resumes at another world size only from
its start or its end; `relayout` says so.
"""

from __future__ import annotations

from collections.abc import Callable

from shardrec.configs.errors import UserError

Span = tuple[int, int, int]  # (row group id, first row, rows)


def standard_layout(owned: list[list[int]], group_rows: list[int]) -> list[list[Span]]:
    """Whole row groups per rank, from each rank's row-group ids."""
    return [[(g, 0, group_rows[g]) for g in ids] for ids in owned]


def remaining(layout: list[list[Span]], rows_done: int) -> list[Span]:
    """The spans not yet read once every rank has read `rows_done` rows of its own, in rank order."""
    out: list[Span] = []
    for spans in layout:
        skip = rows_done
        for g, first, rows in spans:
            if skip >= rows:
                skip -= rows
                continue
            out.append((g, first + skip, rows - skip))
            skip = 0
    return out


def split_even(spans: list[Span], world_size: int) -> list[list[Span]]:
    """Cut the spans, in order, into `world_size` contiguous parts whose rows differ by at most one."""
    total = sum(rows for _, _, rows in spans)
    sizes = [total // world_size + (1 if r < total % world_size else 0) for r in range(world_size)]
    parts: list[list[Span]] = [[] for _ in range(world_size)]
    r, need = 0, sizes[0] if sizes else 0
    for g, first, rows in spans:
        while rows:
            while need == 0 and r < world_size - 1:
                r += 1
                need = sizes[r]
            take = min(rows, need) if need else rows
            parts[r].append((g, first, take))
            first, rows, need = first + take, rows - take, need - take
    return parts


def relayout(state: dict, standard_for: Callable[[int], list[list[Span]]], world_size: int, batch_size: int,
             shuffled: bool) -> tuple[list[list[Span]] | None, int]:
    """Where to continue epoch `state["epoch"]` at `world_size` ranks of `batch_size` rows:
    returns (layout for this epoch, or None for the standard one; batches already done in it).
    `standard_for(W)` gives the standard layout for W ranks."""
    batches, old_w, old_bs = int(state["batches"]), int(state["world_size"]), int(state["batch_size"])
    layout = state.get("layout")
    if old_w == world_size and old_bs == batch_size:
        return layout, batches  # the same ranks continue their own spans
    if batches == 0 and layout is None:
        return None, 0  # an epoch not yet started: the standard layout of the new world size
    if shuffled:
        raise UserError(
            f"this checkpoint stopped {batches} batches into a shuffled epoch at world size {old_w} "
            f"(batch {old_bs} per rank); a shuffled epoch can continue at another world size or batch "
            f"size only from its start. Resume at world size {old_w} with train.batch_size={old_bs}, or "
            "from a checkpoint at an epoch boundary, or without dataset.shuffle_buffer")
    rest = remaining(layout if layout is not None else standard_for(old_w), batches * old_bs)
    return split_even(rest, world_size), 0
