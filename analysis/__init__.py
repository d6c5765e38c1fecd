"""Analysis of metaadv results: load runs, Tune experiments and studies into pandas, rebuild PBT
lineages, count cost two ways, summarise, plot and report. See docs/analysis.md."""

from .frames import StudyFrames, load_study
from .load import load_results

__all__ = ["load_results", "load_study", "StudyFrames"]
