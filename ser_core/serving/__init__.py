"""The serving layer: what the app (app.py, Gradio wiring only) and its API call, one job a module.

  service.py     every name below in one place: what app.py, the tests and the benchmarks import
  catalogue.py   the served models (lazily loaded bundles), the attack domains, each domain's
                 attacks and the strength presets the page starts from
  limits.py      what one request may send: strict parameter parsing, the Space's parameter
                 caps, the attack deadline, clip length, the target emotion
  prediction.py  clip -> emotion, the model's measured accuracy, the "unsure" note; warm-up
  attack.py      clip -> attacked clip under the deadline and caps: the one call of
                 ser_core.attacks.clip.attack_clip, images, playable audio, features
  files.py       the instance's output folders and Gradio cache, capped in bytes and age
  robustness.py  the model's measured robust accuracy and defence (from its bundle), the SNR an
                 attacked clip flipped at or that it held at the budget
  texts.py       what the page says: prediction notes, the attack summary, parameter help,
                 the attacks table, the study and its limits, the committed report
  admission.py   one attack at a time, a short queue, a few per client address, a cancel that
                 stops it; the upload gate (cache cap, a share per address)
  inversion.py   standardised log-Mel features -> a listening copy (Griffin-Lim), re-scored
  plots.py       log-Mel images before, after and their difference
  timeline.py    the emotion over a longer clip: 3 s windows every 0.5 s, scored and plotted
  explain.py     why the model decided: occlusion of log-Mel patches, the map over the log-Mel
  startup.py     the warm start: the default model first, the others in the background
  over_the_air.py  the universal mode (a shipped universal perturbation added to a clip at once)
                 and the "through a room" switch (a clip played in a held-out room and scored)

Model logic lives below it (ser_core.models.bundle, ser_core.attacks, ser_core.attacks.clip); this
package only gathers what the app shows."""
