"""The commands that look at an installation and send nothing: every problem a run would meet
(check.py, `newsletter check`), when each subscriber is due and what needs attention (status.py,
`newsletter status`), and why a paper was or was not sent (explain.py, `newsletter explain`, which
first ingests the new dump files, as a run would)."""
