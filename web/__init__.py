"""The pages a person uses: sign-in, ``/settings/personal/security`` and ``/orgs/{slug}/security``."""
