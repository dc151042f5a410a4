"""certbot-dane: a certbot installer that rolls DANE TLSA records safely."""
from setuptools import find_packages, setup

version = "0.1.0"

install_requires = [
    # Floors at or below Debian bookworm (certbot 2.1, dnspython 2.3,
    # cryptography 38): certbot 2.1 resolves these when it loads the plugin.
    "certbot>=2.1.0",
    "dnspython>=2.3.0",
    "cryptography>=38.0.0",
]

test_extras = [
    "pytest>=7",
    "hypothesis>=6",
    "certbot-dns-rfc2136>=2.1.0",
    "ruff",
]

docs_extras = ["sphinx>=5"]

# Optional SDKs, imported only when their store is used.
route53_extras = ["boto3"]
ovh_extras = ["ovh>=1.0"]
# Cloud DNS over REST: google-auth makes the tokens, requests (certbot's) carries them.
google_extras = ["google-auth>=1.5.1"]

setup(
    name="certbot-dane",
    version=version,
    description="certbot installer that publishes TLSA records and switches "
    "certificates only when the records are provably live",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["tests", "tests.*"]),
    include_package_data=True,
    install_requires=install_requires,
    extras_require={
        "test": test_extras,
        "docs": docs_extras,
        "route53": route53_extras,
        "ovh": ovh_extras,
        "google": google_extras,
    },
    entry_points={
        "certbot.plugins": ["dane = certbot_dane.installer:Installer"],
        "console_scripts": ["certbot-dane = certbot_dane.cli:main"],
    },
    classifiers=[
        "Environment :: Plugins",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: Name Service (DNS)",
        "Topic :: Security :: Cryptography",
    ],
)
