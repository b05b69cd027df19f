"""Python tools used by examples/triage.yaml."""

from typing import Literal

Category = Literal["refund", "bug", "question"]
Urgency = Literal["low", "normal", "high"]

TEAMS = {"refund": "billing", "bug": "engineering", "question": "support"}


def assign_team(category: Category, urgency: Urgency) -> str:
    """Pick the team (and queue) for a ticket.

    Args:
        category: The ticket's category.
        urgency: How urgent the ticket is.
    """
    queue = "priority" if urgency == "high" else "standard"
    return f"{TEAMS[category]}/{queue}"


def refund_policy(ticket: str) -> str:
    """The refund policy step for a refund ticket."""
    twice = "twice" in ticket.lower() or "double" in ticket.lower()
    if twice:
        return "Duplicate charge: refund the extra payment within 3 business days."
    return "Check the payment history, then refund within 14 days of purchase."


def search_help_center(ticket: str, category: Category) -> str:
    """Find the help-center article for a bug report or a question."""
    if category == "bug":
        return "Known issues: https://help.example.com/status"
    return "FAQ: https://help.example.com/faq"
