"""The daemon: its APScheduler wiring, the run lock it holds and its fetch and tick jobs
(schedule.py), and the fetch schedule, a crontab line read as crontab reads it (cron.py)."""
