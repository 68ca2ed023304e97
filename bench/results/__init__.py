"""`make results`: rebuild the benchmark models from their recipes, measure every table of docs/results.md
as JSON, resumably, and regenerate the tables from that JSON.

Modules, in pipeline order:
  config   FULL (the documented protocol) and SMOKE (tiny models, minutes) settings, the models' steps
  steps    each step's prunehead commands, inputs and outputs, built just before it runs
  runner   fingerprints, skips up-to-date steps, resumes interrupted ones, writes <root>/<model>/<step>.json
  extract  figures out of prunehead's outputs, in the shapes of the tables
  blocks   docs/results.md's marker blocks: id, layout, step JSON part
  layouts, layouts_plans, layouts_models   each table: render(figures) <-> parse(markdown)
  render   fill the marker blocks, print every figure beside its documented value
  store    the step JSON files

Run it as `python -m bench.results run|render|import` from the checkout (see __main__).
"""
