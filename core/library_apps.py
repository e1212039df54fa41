"""Libraries' apps under names staff recognise in the console; INSTALLED_APPS lists these.

(Kept out of core/apps.py: an apps module with several AppConfig classes hides core's own.)
"""

from axes.apps import AppConfig as AxesAppConfig
from django_otp.plugins.otp_totp.apps import DefaultConfig as OTPTOTPConfig
from django_rq.apps import DjangoRqAdminConfig


class LoginLockoutsConfig(AxesAppConfig):
    verbose_name = "Login lockouts"


class TwoFactorDevicesConfig(OTPTOTPConfig):
    verbose_name = "Two-factor devices"


class JobQueuesConfig(DjangoRqAdminConfig):
    verbose_name = "Job queues"
