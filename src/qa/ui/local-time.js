// Shows every <time datetime="..."> element in the browser's time zone, formatted for the page
// language. The server writes RFC 3339 UTC, which stays visible if this script does not run.
document.querySelectorAll('time[datetime]').forEach((node) => {
  const date = new Date(node.getAttribute('datetime'));
  if (!Number.isNaN(date.getTime())) {
    node.textContent = date.toLocaleString(document.documentElement.lang);
    node.title = node.getAttribute('datetime');
  }
});
