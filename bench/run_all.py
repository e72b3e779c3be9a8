"""`make bench`: every benchmark, one thread, ratios measured in one process. Writes bench/results.json."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import dst_overhead  # noqa: E402
import imp_level  # noqa: E402
import masking_overhead  # noqa: E402
import scoring_time  # noqa: E402
import sparse_speed  # noqa: E402
import sparse_training  # noqa: E402

if __name__ == "__main__":
    quick = "--quick" in sys.argv
    results = {"masking_overhead": masking_overhead.main(quick), "imp_level": imp_level.main(),
               "scoring_time": scoring_time.main(quick), "dst_overhead": dst_overhead.main(quick),
               "sparse_speed": sparse_speed.main(quick), "sparse_training": sparse_training.main(quick)}
    out = Path(__file__).parent / "results.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
