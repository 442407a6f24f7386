"""The SES identity notifications are sent from.

Declaring it here gives the worker's IAM policy a resource to name for ``ses:SendEmail``
instead of a wildcard. On AWS, SES e-mails the address a link that must be clicked once.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


class SenderIdentity(pulumi.ComponentResource):
    """A verified SES e-mail identity."""

    identity: aws.ses.EmailIdentity

    def __init__(self, name: str, email: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("flashsale:notifications:SenderIdentity", name, None, opts)
        self.email = email
        self.identity = aws.ses.EmailIdentity(
            name, email=email, opts=pulumi.ResourceOptions(parent=self)
        )
        self.register_outputs({"arn": self.identity.arn})
