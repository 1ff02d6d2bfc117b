"""What a shopper or a shop's code can ask of the index, one use case a module, shared by every
surface: the command line (app.py), the chat (assistant/) and the shop's JSON API (shop/).

Each operation takes the `Searcher` and the `SearchPolicy` as arguments and raises structured
errors (`Refused`, and the store's and catalog's own); the surfaces only translate them into
their own words (an HTTP status, a chat message, a line on stderr).
"""
from operations.errors import Refused
from operations.filter_request import FilterRequest
from operations.find_by_photo import find_by_photo
from operations.find_similar import find_similar
from operations.find_the_look import FoundItem, Look, LookSettings, find_the_look
from operations.policy import SearchPolicy

__all__ = ["FilterRequest", "FoundItem", "Look", "LookSettings", "Refused", "SearchPolicy", "find_by_photo",
           "find_similar", "find_the_look"]
