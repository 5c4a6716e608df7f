"""``manage.py seed_demo``: the demo rooms and users (password ``demo``). Idempotent."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from chat.models import Room

ROOMS = [
    ("general", "General", "Everyone is welcome.", False),
    ("random", "Random", "Anything goes.", False),
    ("help", "Help", "Questions and answers.", False),
    ("staff", "Staff", "Staff only: alice may come in, bob and carol may not.", True),
]
#: username -> is_staff. Demo only: every demo user's password is "demo".
USERS = {"alice": True, "bob": False, "carol": False}
DEMO_PASSWORD = "demo"  # a demo login, printed by scripts/demo


class Command(BaseCommand):
    """Create the demo rooms and users."""

    help = "Create the demo rooms and the users alice (staff), bob and carol (password: demo)."

    def handle(self, *args: Any, **options: Any) -> None:
        """Create or update the rows."""
        for slug, title, description, staff_only in ROOMS:
            Room.objects.update_or_create(
                slug=slug,
                defaults={"title": title, "description": description, "staff_only": staff_only},
            )
        User = get_user_model()
        for name, staff in USERS.items():
            user, _ = User.objects.get_or_create(username=name)
            user.is_staff = staff
            user.set_password(DEMO_PASSWORD)
            user.save()
        self.stdout.write(
            f"{len(ROOMS)} rooms; users {', '.join(USERS)} (password {DEMO_PASSWORD!r})"
        )
