"""Delivery channels: email (templates, SMTP, file outbox) and webhooks."""
