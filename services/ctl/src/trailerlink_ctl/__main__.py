from trailerlink_ctl.cli import run

run()
