"""The serving layer: what the app (app.py, Gradio wiring only) and its API call.

  service.py    models, the attack catalogue and presets, predict and run_attack under the
                Space's deadline and parameter caps, output folders, the committed report
  inversion.py  standardised log-Mel features -> a listening copy (Griffin-Lim), re-scored
  plots.py      log-Mel images before, after and their difference

Model logic lives below it (ser_core.models.bundle, ser_core.attacks, ser_core.attacks.clip); this
package only gathers what the app shows."""
