"""``pinapp alerter``: rules evaluated every interval, alerts sent to a webhook once per condition."""
