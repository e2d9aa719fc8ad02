"""One `[PASS]`/`[FAIL]` line per check, counted for the closing `N passed, N failed`."""
RESULTS = {"passed": 0, "failed": 0}


def report(name, ok, detail=""):
    RESULTS["passed" if ok else "failed"] += 1
    print(f"[{'PASS' if ok else 'FAIL'}] {name} {detail}", flush=True)
