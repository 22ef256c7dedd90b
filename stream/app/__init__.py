"""The daemon and its faces: monitor, metrics, dashboard, subscriber, replay."""
