"""chargingd: real-time prepaid and postpaid charging for VoIP operators."""

__version__ = "0.1.0"
