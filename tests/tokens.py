"""The bearer tokens ``settings_factory`` configures, one per role (issue 14: a token may do
only what its role allows), as request headers."""

WEBHOOK = {"Authorization": "Bearer t1"}  # Alertmanager's: may only post alerts
READ = {"Authorization": "Bearer r1"}  # the audit API
ADMIN = {"Authorization": "Bearer a1"}  # pause and resume
