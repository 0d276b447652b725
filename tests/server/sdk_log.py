"""The published client's log lines (retries, version skew), for the example scripts the compatibility tests run
in the clients' virtual environment (Python >= 3.12, no sie import; imported from the scripts' own folder)."""

import logging


class ClientLog(logging.Handler):
    """Every message sie-sdk logs at INFO or above, from the moment it is created."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []
        logging.getLogger("sie_sdk").addHandler(self)
        logging.getLogger("sie_sdk").setLevel(logging.INFO)

    def emit(self, record):
        self.messages.append(record.getMessage())
