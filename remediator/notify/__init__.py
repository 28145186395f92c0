"""Notification channels (Slack, generic webhook, PagerDuty) behind the Notifier port."""
