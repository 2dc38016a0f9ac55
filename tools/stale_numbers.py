"""After re-running a chapter: the numbers its prose quotes that the previous run printed and this run no longer does.

`provenance.unshown_numbers` (the provenance chapter) accepts a prose number if any output on the page shows it, so a
timing that moved between runs can hide behind the same value printed by another cell (a 0.68x that went stale while
a different table still prints 0.68). This script compares the notebook with its committed version: every prose
number that an output printed by the committed version, and no longer by this one, would show at the precision
written (the page-wide check's rule) is listed, even where the page-wide
check passes (a number that lost one of its outputs may be the one the sentence quotes). Read each one against the cell that printed it and rewrite the sentence from the new output.

Usage: `python tools/stale_numbers.py nbs/05_compute.ipynb [...] [--rev HEAD]`; exit 1 when something is listed.
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def committed(path:str, rev:str="HEAD")->dict|None:
    "The notebook at `path` as committed at `rev`, or `None` if it is not in that commit."
    r = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, cwd=ROOT)
    return json.loads(r.stdout) if r.returncode == 0 else None

def stale_numbers(old:dict, new:dict)->list:
    "`(cell id, number)` of `new`'s prose numbers that an output `old` printed, and `new` no longer prints, would show."
    from collections import Counter
    from finetune_book.provenance import output_numbers, prose_numbers, unshown_numbers
    lost = list((Counter(output_numbers(old)) - Counter(output_numbers(new))).elements())  # printed fewer times now
    backed_by_nothing_lost = set(unshown_numbers(new, lost))  # the same precision rule as the page-wide check
    return sorted({(cid, n) for cid, n in prose_numbers(new) if (cid, n) not in backed_by_nothing_lost})

if __name__ == "__main__":
    args = sys.argv[1:]
    rev = args[args.index("--rev") + 1] if "--rev" in args else "HEAD"
    paths = [a for a in args if a.endswith(".ipynb")]
    if not paths: sys.exit(__doc__.strip().splitlines()[-1])
    found = False
    for p in paths:
        try:
            rel = Path(p).resolve().relative_to(ROOT)
            new = json.loads(Path(p).read_text())
        except ValueError: sys.exit(f"{p}: not a notebook of this repository ({ROOT}), or not valid JSON.")
        except OSError as e: sys.exit(f"{p}: cannot read it ({e.strerror}).")
        old = committed(str(rel), rev)
        if old is None: print(f"{p}: not in {rev}; nothing to compare"); continue
        hits = stale_numbers(old, new)
        found |= bool(hits)
        print(f"{p}: " + (", ".join(f"{n} ({cid})" for cid, n in hits) if hits else "no prose number lost its output"))
    sys.exit(1 if found else 0)
