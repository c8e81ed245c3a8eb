"""Real browsers with JavaScript off (as Tor Browser "safest") against a real node.

Chromium through Playwright (the system build, never a downloaded one) and
Debian's firefox-esr through WebDriver BiDi. Every request a page makes must
stay on loopback; any other host fails the test.
"""
