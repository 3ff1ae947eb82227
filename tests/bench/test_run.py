"""bench/run.py: running some benchmarks replaces only their sections of RESULTS.md."""

from __future__ import annotations

from bench.run import HEADER, replace_sections

RESULTS = (HEADER + "# Parser benchmark\n\nold parser\n\n## a subsection\n\nkept with it\n\n"
           "# `kpp stream` throughput\n\nold stream\n\n# Soak: 200 nodes\n\nsoak\n")


def test_named_reports_replace_their_sections_and_keep_the_others() -> None:
    out = replace_sections(RESULTS, ["# `kpp stream` throughput\n\nnew stream\n"])
    assert out == RESULTS.replace("old stream", "new stream")


def test_a_section_is_replaced_with_its_subsections() -> None:
    out = replace_sections(RESULTS, ["# Parser benchmark\n\nnew parser\n\n## whole process\n\nfigures\n"])
    assert "old parser" not in out and "kept with it" not in out
    assert out.index("new parser") < out.index("## whole process") < out.index("# `kpp stream`")
    assert "old stream" in out and out.startswith(HEADER)


def test_a_new_report_goes_before_the_soak() -> None:
    out = replace_sections(RESULTS, ["# Something new\n\nx\n"])
    assert out.index("old stream") < out.index("# Something new") < out.index("# Soak")
