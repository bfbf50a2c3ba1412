"""The `file` destination (a Runner the lane drives) and the Standard Webhooks helpers the
`webhook` adapter signs with. The per-service adapters live in `journeyd.delivery.adapters`."""

from journeyd.delivery.destinations.file import FileSender

__all__ = ["FileSender"]
