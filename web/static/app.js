// A little plain JavaScript where it helps: copy a secret, download the backup codes. The pages work without it.
"use strict";
document.documentElement.classList.add("has-js");

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      var status = document.getElementById("copied");
      navigator.clipboard.writeText(source.getAttribute("data-secret")).then(
        function () { if (status) { status.textContent = "Copied."; } },
        function () { if (status) { status.textContent = "Select the text and copy it by hand."; } }
      );
    });
  });

  var download = document.getElementById("download-codes");
  if (download) {
    download.addEventListener("click", function () {
      var list = document.getElementById("backup-codes");
      var codes = Array.prototype.map.call(list.querySelectorAll("code"), function (c) { return c.textContent.trim(); });
      var issuer = list.getAttribute("data-issuer");
      var account = list.getAttribute("data-account");
      var date = list.getAttribute("data-date");
      var text = issuer + " backup codes\n" +
        "Account: " + account + "\n" +
        "Generated: " + date + "\n\n" +
        "Each code signs you in once when you cannot use your usual second factor.\n" +
        "Keep this file somewhere safe.\n\n" + codes.join("\n") + "\n";
      var url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      var link = document.createElement("a");
      link.href = url;
      link.download = issuer.toLowerCase().replace(/[^a-z0-9]+/g, "-") + "-backup-codes-" + date + ".txt";
      document.body.appendChild(link);
      link.click();
      link.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
    });
  }
});
