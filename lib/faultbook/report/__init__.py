"""Reports: the papermill runner, plots, the demo report and the benchmarks. Imports every
package but ``faultbook.cli``."""
